"""Runs ``ns-train`` or ``gmnerf-synth`` by module, whatever the console scripts' shebangs say.

    python3 launch.py ns-train gm-nerf-small --data DIR ...
    python3 launch.py gmnerf-synth --out DIR ...

``ns-train`` runs unchanged except for how it ends when the kit's ``timeout`` stops it: SIGTERM raises
KeyboardInterrupt, which nerfstudio's launcher catches, so the run stops cleanly (decode threads closed, tensorboard
writer closed). Events are also flushed every second rather than every 120 s: without TensorFlow, tensorboard appends
each event to the file as it comes, but TensorFlow's file layer, when installed, holds them until a flush.
"""

from __future__ import annotations

import atexit
import functools
import signal
import sys

TOOLS = {
    "ns-train": "nerfstudio.scripts.train",
    "gmnerf-synth": "gmnerf_ns.cli.synth",
}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def flush_events_often() -> None:
    """SIGTERM as KeyboardInterrupt; nerfstudio's tensorboard writer with a 1 s flush interval, closed at exit."""
    import nerfstudio.configs.base_config  # noqa: F401  (imports the writer module; importing it first is circular)
    import nerfstudio.utils.writer as writer
    from torch.utils.tensorboard import SummaryWriter

    writer.SummaryWriter = functools.partial(SummaryWriter, flush_secs=1)

    def close() -> None:
        for each in writer.EVENT_WRITERS:
            if isinstance(each, writer.TensorboardWriter):
                each.tb_writer.close()

    atexit.register(close)
    # nerfstudio's launcher catches KeyboardInterrupt and returns, so the process exits through atexit.
    signal.signal(signal.SIGTERM, _interrupt)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        raise SystemExit(f"usage: launch.py {{{','.join(TOOLS)}}} [options]")
    tool = sys.argv.pop(1)
    sys.argv[0] = tool
    module = __import__(TOOLS[tool], fromlist=["entrypoint"])
    if tool == "ns-train":
        flush_events_often()
    module.entrypoint()


if __name__ == "__main__":
    main()
