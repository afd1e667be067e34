"""Schedules: how a fusion group maps onto the machine, as plain frozen records (templates), and the default choice of one per group."""
