"""`lisa-demo-bag`: record the demo rosbag2 of synthetic scenes with its ground-truth script.

Argument parsing and the printed summary; the work is lisa_ros.synthetic.demo_bag.record_demo_bag.
"""

from __future__ import annotations

import argparse
import json
import sys

from lisa_ros.cli.errors import fail
from lisa_ros.synthetic.demo_bag import record_demo_bag


def main(argv: list[str] | None = None) -> int:
    """lisa-demo-bag: see `lisa-demo-bag --help`. Returns the exit code (2: bad arguments, an existing
    bag or an unwritable output; one line on stderr, the traceback too with --debug or LISA_DEBUG=1)."""
    args = _parser().parse_args(argv)
    try:
        summary = record_demo_bag(
            args.output, seed=args.seed, split=args.split, scenes=args.scenes, frames_per_scene=args.frames,
            rate_hz=args.rate, storage=args.storage, depth_encoding=args.depth_encoding, phrasing=args.phrasing,
            overwrite=args.overwrite, commands_per_scene=args.commands,
        )
    except (OSError, ValueError, ImportError) as error:  # OSError: an existing bag, an unwritable --output
        return fail("lisa-demo-bag", error, args.debug)
    print(json.dumps(summary, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lisa-demo-bag",
        description="Record a demo rosbag2 from the synthetic reasoning scenes, with a ground-truth script.",
    )
    parser.add_argument(
        "--output", default="outputs/demo_bag", help="output folder (bag/, script.jsonl, masks/, scene.json)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"],
                        help="scene stream (test: held out from training and from model selection)")
    parser.add_argument("--scenes", type=int, default=2, help="tables, visited one after the other")
    parser.add_argument("--frames", type=int, default=40,
                        help="frames per scene (one command per 10 frames at least, up to --commands)")
    parser.add_argument("--commands", type=int, default=4, help="commands per scene at most")
    parser.add_argument("--rate", type=float, default=4.0, help="frame rate, Hz")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    parser.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"])
    parser.add_argument("--phrasing", default="heldout", choices=["train", "heldout"], help="command phrasings")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag in --output")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set LISA_DEBUG=1)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
