"""The compile pipeline: tensor graph → fusion plan → GIR kernels → passes → target code, with the disk cache and the dumps of every stage. Produces a `warpweave.program.Program`."""
