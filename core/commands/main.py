"""The ``eegsine`` command (and its aliases ``eegsine-export``, ``eegsine-bench``).

Thin by design: argparse into config dataclasses, then one library call. Subcommands
living in later layers (training, export, bench) are found through :data:`SUBCOMMANDS`:
each named module exposes ``add_parser(subparsers)``, which registers its parser and sets
``func`` (called with the parsed namespace, returns an exit code or None).

Errors: a :class:`~eegsine.errors.UserError` prints one line and exits 2; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Callable, Sequence

from eegsine import __version__
from eegsine.errors import UserError, install_hint
from eegsine.config import check_threads
from eegsine.runtime.isa import this_host
from eegsine.commands.data import add_parser as data_parser
from eegsine.commands.stream import add_arguments as stream_arguments, run as stream_run
from eegsine.commands.verify import add_arguments, run as verify_run

# group -> modules contributing ``add_parser`` (a command-line entry point may reach across layers)
SUBCOMMANDS: dict[str, list[str]] = {
    "train": ["eegsine.commands.train_classifier", "eegsine.commands.train_encoder",
              "eegsine.commands.train_diffusion", "eegsine.commands.train_domain"],
    "top": ["eegsine.commands.attack", "eegsine.commands.generate", "eegsine.commands.export",
            "eegsine.commands.bench", "eegsine.commands.pipeline", "eegsine.commands.report"],
}


def _add_optional_modules(subparsers: argparse._SubParsersAction, modules: list[str]) -> None:
    for mod in modules:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (e.name == mod or mod.startswith(e.name + ".")):
                continue  # that layer is not installed / not written yet
            raise
        m.add_parser(subparsers)


# -- env -----------------------------------------------------------------------------------
def env_report() -> dict[str, str]:
    """Versions, threads and accelerator availability (what `eegsine env` prints)."""
    import platform

    out: dict[str, str] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpu_count": str(os.cpu_count())}
    for mod in ("eegsine", "torch", "numpy", "onnx", "onnxruntime", "diffusers", "accelerate", "peft",
                "torchmetrics", "torchattacks", "safetensors", "triton", "tensorrt"):
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001 - report, do not fail
            out[mod] = f"not available ({type(e).__name__})"
    try:
        import torch

        out["torch_threads"] = str(torch.get_num_threads())
        out["cuda"] = f"yes ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "no"
    except Exception:  # noqa: BLE001
        out["cuda"] = "no (torch missing)"
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = ",".join(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        pass

    host = this_host()
    out["cpu"] = str(host["cpu"])
    out["int8_isa_class"] = host["isa_class"] + (" (u8 x s8 products saturate int16: use INT8 target portable)"
                                                 if host["u8s8_saturates"] else "")
    out["int8_features"] = ", ".join(host["int8_features"]) or "none"
    out["triton_kernels"] = "CUDA" if out.get("cuda", "").startswith("yes") and "not" not in out["triton"] else (
        "interpreter only (TRITON_INTERPRET=1)" if "not" not in out["triton"] else "no")
    for var in ("OMP_NUM_THREADS", "EEGSINE_DATA", "EEGSINE_SINE_HEAD_IMPL"):
        out[var] = os.environ.get(var, "(unset)")
    return out


def _cmd_env(ns: argparse.Namespace) -> int:
    for k, v in env_report().items():
        print(f"{k:22s} {v}")
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser(prog: str = "eegsine") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="eegsine: EEG-to-image diffusion and sine-bounded robust "
                                "classifiers, trained in PyTorch and exported to ONNX / INT8 / TensorRT.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("--threads", dest="global_threads", type=int, default=None, metavar="N",
                   help="torch/onnxruntime intra-op threads for every command (default: OMP_NUM_THREADS or all "
                        "cores); a subcommand's own --threads, where it has one, wins over it")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    data_parser(sub)

    e = sub.add_parser("env", help="print versions, threads, CUDA/TensorRT/Triton availability")
    e.set_defaults(func=_cmd_env)

    v = sub.add_parser("verify",
                       help="re-prove an INT8 bundle on this machine (numpy + onnxruntime; also eegsine-verify)")

    add_arguments(v, threads_flag=False)
    v.set_defaults(func=verify_run)

    st = sub.add_parser("stream", help="decide per stimulus marker on a live EEG stream (numpy + onnxruntime; "
                                       "BrainFlow, LSL or a recording)")

    stream_arguments(st)
    st.set_defaults(func=stream_run)

    if not toolkit_installed():  # a device's install (numpy + onnxruntime): list only what runs here
        for name in TOOLKIT_COMMANDS:
            q = sub.add_parser(name, add_help=False, prefix_chars="\0")  # no help=: not in the command list
            q.add_argument("rest", nargs=argparse.REMAINDER)
            q.set_defaults(func=_needs_toolkit(name))
        p.epilog = (f"Not installed here (they need the toolkit: torch and the training stack): "
                    f"{', '.join(TOOLKIT_COMMANDS)}; {_TOOLKIT_HOW}.")
        return p
    t = sub.add_parser("train", help="train a model (classifier, encoder, diffusion)")
    tsub = t.add_subparsers(dest="what", metavar="WHAT")
    _add_optional_modules(tsub, SUBCOMMANDS["train"])
    t.set_defaults(func=lambda ns: (t.print_help(), 2)[1])

    _add_optional_modules(sub, SUBCOMMANDS["top"])
    return p


# the commands that train, attack, export or benchmark: torch and the training stack (the `cpu`/`gpu` extras)
TOOLKIT_COMMANDS = ("train", "attack", "generate", "export", "bench", "pipeline", "report")


_TOOLKIT_HOW = 'from a clone of eegsine, pip install ".[cpu]" (or ".[gpu]" on an NVIDIA machine; README "Install")'


def toolkit_installed() -> bool:
    """Whether torch can be imported here (looked up, not imported: `--help` stays instant)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses torch, or a half-removed install
        return False


def _needs_toolkit(name: str) -> Callable[[argparse.Namespace], int]:
    def refuse(ns: argparse.Namespace) -> int:
        raise UserError(f"`eegsine {name}` needs the toolkit (torch and the training stack), not installed here: "
                        f"{_TOOLKIT_HOW}")
    return refuse


def apply_global_threads(ns: argparse.Namespace) -> None:
    """One meaning for ``eegsine --threads N``: torch/ORT threads for the command, and the value of its
    config's ``threads`` field unless the subcommand's own ``--threads`` was given (argparse copies a
    subparser's unset ``--threads`` over the global one, so the global flag has its own dest). Both are
    bounded by the CPUs this process may use (:func:`eegsine.config.check_threads`) before anything runs."""
    own = getattr(ns, "threads", None)  # a subcommand's own --threads: its config checks it in full (0, < 0) ...
    if isinstance(own, int) and own > 0:  # ... but after importing torch (seconds): the bound is checked here first
        _set_threads(check_threads(own, "--threads"), import_torch=False)  # a torch-free command stays so
    n = getattr(ns, "global_threads", None)
    if n is None:
        return
    n = check_threads(n, "--threads")  # before torch/OpenMP see it: 100000 threads segfault there
    _set_threads(n, import_torch=True)
    if getattr(ns, "threads", None) is None:
        ns.threads = n


def _set_threads(n: int, import_torch: bool) -> None:
    """OpenMP's count for what the command imports later, and torch's now (if imported, or ``import_torch``)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    if import_torch and "torch" not in sys.modules:
        try:
            import torch  # noqa: F401
        except ImportError:
            return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _alias_options(sp: argparse.ArgumentParser, prog: str) -> None:
    """An alias's parser takes the top-level options too: ``eegsine-export --threads 1 ...`` as its usage says."""
    sp.prog = prog
    sp.add_argument("--version", action="version", version=f"{prog} {__version__}", help="print the version and exit")
    own = set(sp._option_string_actions)
    if "--debug" not in own:
        sp.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    if "--threads" not in own:  # eegsine-bench has its own --threads; the global one sets the same config field
        sp.add_argument("--threads", dest="global_threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch and ONNX Runtime (default: all cores)")


def command_parser(prog: str, prepend: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``prog`` (``eegsine``, or an alias such as ``eegsine-export`` = ``eegsine export``, whose
    argv is parsed with ``prepend`` in front)."""
    parser = build_parser(prog)
    if prepend:  # an alias (eegsine-bench = eegsine bench): its usage and errors name the alias alone
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and prepend[0] in action.choices:
                _alias_options(action.choices[prepend[0]], prog)
    return parser


def _run(argv: Sequence[str] | None, prog: str, prepend: list[str]) -> int:
    parser = command_parser(prog, prepend)
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = parser.parse_args(prepend + argv)
    func: Callable | None = getattr(ns, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        apply_global_threads(ns)
        rc = func(ns)
    except UserError as err:
        if ns.debug:
            raise
        msg = " ".join(str(err).split("\n"))
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return err.exit_code
    except ImportError as err:  # `pip install eegsine` is the torch-free core: say which extra a command needs
        hint = install_hint(err.name or "")
        if ns.debug or hint is None:
            raise
        print(f"{prog}: error: {err.name} is not installed; {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (completed stages and checkpoints are kept; rerun to resume)", file=sys.stderr)
        return 130
    return int(rc or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return _run(argv, "eegsine", [])


def export_main(argv: Sequence[str] | None = None) -> int:
    """``eegsine-export ...`` is ``eegsine export ...``."""
    return _run(argv, "eegsine-export", ["export"])


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``eegsine-bench ...`` is ``eegsine bench ...``."""
    return _run(argv, "eegsine-bench", ["bench"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
