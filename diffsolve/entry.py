"""The `solve` console script. Loading its modules (torch, RDKit) takes seconds: Ctrl-C, SIGTERM or SIGHUP in
that time ends it with status 130, as later, instead of a traceback (or SIGTERM's 143)."""

from __future__ import annotations

import signal


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    stops = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]  # Windows: no SIGHUP
    caught = {sig: signal.getsignal(sig) for sig in stops
              if signal.getsignal(sig) is not signal.SIG_IGN}  # nohup's ignored SIGHUP stays ignored
    try:
        for sig in caught:
            signal.signal(sig, _interrupted)
        from diffsolve.solvers.cli import main as solve
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        for sig, handler in caught.items():
            signal.signal(sig, handler)
    solve()
