"""Benchmarks: scripts that print a table and write JSON. Not tests."""

import argparse


def at_least(minimum: int):
    """An argparse type: an int no smaller than `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse

