"""The coalescing report (strides where the offset is affine in the thread index,
32-byte sectors per warp where it is not) and the L2 prefetch hint on loads that
read half lines."""
from tests.utils import column_sum_tile
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.expr_text import parse_expr
from warpweave.ir.gir import Buffer, KernelBuilder
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_text import print_kernel
from warpweave.ir.gir_verify import verify
from warpweave.passes.movement import coalescing, prefetch_lines


def _verdicts(kernel):
    return [note.split(":", 1)[1] for note in dict(coalescing(kernel).meta)["coalescing"].split("; ")]


def _gather(offset: str):
    """y[t] = x[offset(t)] over one warp."""
    b = KernelBuilder("gather")
    b.add_param(Buffer("x", dt.float32, (4096,), (1,), "in"))
    b.add_param(Buffer("y", dt.float32, (32,), (1,), "out"))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", 32, g)
    v = b.load("x", parse_expr(offset), t)
    b.store("y", ex.Var("t"), v, t)
    return b.build()


def test_rows_of_threads_are_checked_sector_by_sector():
    # 4 rows of 8 threads, each row 32 contiguous bytes: as few sectors as can be
    assert _verdicts(_gather("(t % 8) + (t // 8) * 1024"))[0] == "coalesced"
    # 8 rows of 4 threads: 16 bytes used of each sector
    assert _verdicts(_gather("(t % 4) + (t // 4) * 64"))[0] == "8 sectors/warp, fewest 4"
    assert _verdicts(_gather("t * 2"))[0] == "stride 2"


def test_column_tiles_read_whole_sectors():
    assert _verdicts(_column_tile(dt.bfloat16))[0] == "coalesced"


# ----------------------------------------------------------------------------- prefetch-lines

def _column_tile(dtype, cols=1024):
    return column_sum_tile(dtype, 4096, cols)


def _hints(kernel):
    return [n.attr("l2_prefetch") for n in prefetch_lines(kernel).nodes if n.op == "move.global.reg"]


def test_half_lines_read_by_neighbouring_blocks_get_the_hint():
    # 32 bfloat16 columns per tile: 64 bytes of each 128-byte line; the next tile reads the rest
    assert _hints(_column_tile(dt.bfloat16)) == [128]
    assert "L2 prefetch 128 B" in _verdicts(prefetch_lines(_column_tile(dt.bfloat16)))[0]
    # float32 tiles read whole lines already
    assert _hints(_column_tile(dt.float32)) == [None]
    # a single tile: nobody reads the other half of its lines
    assert _hints(_column_tile(dt.bfloat16, cols=32)) == [None]


def test_partial_lines_nobody_else_reads_get_no_hint():
    assert _hints(_gather("(t % 4) + (t // 4) * 64")) == [None]  # 16 of every 128 bytes, once
    assert _hints(_gather("t")) == [None]  # whole lines


def test_the_hint_verifies_and_round_trips_through_the_text_form():
    kernel = prefetch_lines(_column_tile(dt.bfloat16))
    verify(kernel)
    assert parse_kernel(print_kernel(kernel)) == kernel
    assert "l2_prefetch=128" in print_kernel(kernel)
