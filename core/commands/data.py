"""``eegsine data``: list, fetch and describe data sets, or write one as a continuous recording.

One subparser per action, each with its own flags. Loader options come in as ``-o KEY=VALUE`` and are
parsed here, once, against the data set's typed options (:class:`~eegsine.data.options.DataOptions`);
everything below takes the dataclass.
"""
from __future__ import annotations

import argparse

from eegsine import data
from eegsine.data.base import DataSpec
from eegsine.data.options import DataOptions
from eegsine.data.recording import options_like, record_data_set
from eegsine.errors import UserError

NAME_HELP = "data set name (see `eegsine data list`), e.g. mnist, synthetic-vep, uea:FingerMovements, raw:rec.fif"


def options_table(specs: list[tuple[str, DataSpec]] | None = None) -> str:
    """Every data set's options, ``KEY TYPE = DEFAULT  help`` (the ``--help`` epilog and ``info``'s tail)."""
    lines = []
    for name, spec in specs or sorted(data.REGISTRY.items()):
        rows = spec.options.help_rows()
        shown = "uea:<Name>" if name == "uea" else "raw:<path>" if name == "raw" else name
        lines.append(f"{shown} options (-o KEY=VALUE):" if rows else f"{shown}: no options")
        for key, tp, default, text in rows:
            lines.append(f"  {key} {tp} = {default}" + (f"  {text}" if text else ""))
    return "\n".join(lines)


def parse_options(name: str, ns: argparse.Namespace, base: DataOptions | dict | None = None) -> DataOptions:
    """``--root`` and each ``-o KEY=VALUE`` parsed against data set ``name``'s options (on top of ``base``)."""
    spec = data.get_spec(name)
    pairs = list(ns.option or [])
    if getattr(ns, "root", None):
        if "root" not in spec.options.keys():
            raise UserError(f"{name}: --root: this data set has no root option (options: "
                            f"{', '.join(spec.options.keys())})")
        pairs.insert(0, f"root={ns.root}")
    return spec.parse(name, pairs, base=base)


# -- actions -------------------------------------------------------------------------------------
def _list(ns: argparse.Namespace) -> int:
    for name, spec in sorted(data.REGISTRY.items()):
        try:
            why = spec.why_not_here()  # a package its loader imports: `data info` would fail, so not available
            here = (f"unavailable ({why})" if why else
                    "available" if spec.available() else f"missing ({spec.how_to_get})")
        except Exception as e:  # noqa: BLE001 - availability probes must not break listing
            here = f"unknown ({e})"
        print(f"{name:14s} {spec.kind:5s} {here}\n{'':20s} {spec.description}")
    return 0


def _fetch(ns: argparse.Namespace) -> int:
    print(data.fetch(ns.name))
    return 0


def _info(ns: argparse.Namespace) -> int:
    spec = data.get_spec(ns.name)
    spec.check_needs(ns.name)  # as `data list` says: one line naming the missing packages and their install line
    opts = parse_options(ns.name, ns)
    print(f"{ns.name}: {spec.description}")
    if spec.kind == "image":
        s = data.load_images(ns.name, opts)
        print(f"images     {len(s.train_x)} train / {len(s.test_x)} test, shape {s.shape}, range "
              f"[{s.train_x.min():.2f}, {s.train_x.max():.2f}], source: {s.source}\n"
              f"classes    {s.n_classes}: {', '.join(s.classes)}")
    else:
        info = data.describe_eeg(ns.name, opts)
        print("\n".join(info.lines()))
        if info.from_options:
            print("           (from the options: nothing generated)")
    changed = opts.changed()
    if changed:
        print("given      " + ", ".join(f"{k}={v!r}" for k, v in changed.items()))
    print(options_table([(ns.name, spec)]))
    return 0


def _export_recording(ns: argparse.Namespace) -> int:
    if ns.trials is not None and ns.trials < 1:  # 0 reads as "no trials": leave the flag out for all of them
        raise UserError(f"--trials must be >= 1 (leave it out for every trial of the split), got {ns.trials}")
    if ns.like:
        name, opts = options_like(ns.like, [f"root={ns.root}"] * bool(ns.root) + list(ns.option or []))
        if ns.name and ns.name != name:
            raise UserError(f"--like {ns.like}: the bundle's encoder was trained on {name}, not {ns.name} "
                            "(leave the name out)")
    elif not ns.name:
        raise UserError("`eegsine data export-recording` needs a data set name or --like BUNDLE")
    else:
        name, opts = ns.name, parse_options(ns.name, ns)
    path, rec, info = record_data_set(name, opts, ns.out, board=ns.board, like=ns.like, split=ns.split,
                                      n_trials=ns.trials or 0, isi=ns.isi, isi_jitter=ns.isi_jitter, seed=ns.seed)
    print(f"{path}: {len(rec.events)} trials of {info.name} ({ns.split}), {rec.data.shape[0]} ch x "
          f"{rec.data.shape[1]} samples ({rec.data.shape[1] / rec.sfreq:.1f} s) @ {rec.sfreq:g} Hz, "
          f"markers = class index + 1; sidecar {path}.json")
    return 0


# -- parser --------------------------------------------------------------------------------------
def _options_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, metavar="DIR",
                   help="the set's files are here (the same as -o root=DIR), instead of the default location")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="a loader option (JSON value, else text), repeatable, e.g. -o image_set=digits -o n_chans=32; "
                        "each data set's options are listed below")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``eegsine data`` and its four actions."""
    raw = argparse.RawDescriptionHelpFormatter
    d = subparsers.add_parser("data", help="list, fetch or describe data sets; write one as a recording",
                              description="List, fetch or describe data sets, or write one as a continuous "
                                          "recording. `eegsine data ACTION --help` shows an action's flags and, "
                                          "for info and export-recording, every data set's options.")
    actions = d.add_subparsers(dest="action", metavar="ACTION")
    d.set_defaults(func=lambda ns: (d.print_help(), 2)[1])

    ls = actions.add_parser("list", help="every data set, its kind and whether it is here")
    ls.set_defaults(func=_list)

    fe = actions.add_parser("fetch", help="download or install a data set that can be fetched (mnist, fashion-mnist)")
    fe.add_argument("name", metavar="NAME", help=NAME_HELP)
    fe.set_defaults(func=_fetch)

    table = options_table()
    inf = actions.add_parser("info", help="what a data set is: channels, rate, units, reference, filters, trials, "
                                          "classes (EEG: from its options where it can, e.g. synthetic-vep "
                                          "generates nothing), and its options",
                             formatter_class=raw, epilog=table)
    inf.add_argument("name", metavar="NAME", help=NAME_HELP)
    _options_flags(inf)
    inf.set_defaults(func=_info)

    ex = actions.add_parser(
        "export-recording", formatter_class=raw, epilog=table,
        help="an EEG set's trials as one continuous recording with stimulus markers (.csv: BrainFlow playback "
             "file; .fif: MNE FIF)",
        description="Write an EEG set's trials end to end as one continuous recording, each with its\n"
                    "stimulus marker (code = class index + 1). --like BUNDLE: the data set and options the\n"
                    "bundle's encoder was trained on, checked against its channels, rate and epoch.")
    ex.add_argument("name", nargs="?", metavar="NAME", help=NAME_HELP + " (optional with --like)")
    ex.add_argument_group("required").add_argument(
        "--out", required=True, metavar="REC",
        help="REC.csv (BrainFlow playback file + REC.csv.json sidecar) or REC.fif (MNE)")
    ex.add_argument("--like", default=None, metavar="BUNDLE",
                    help="make the recording fit this bundle: its encoder's data set and options (from its "
                         "manifest), checked against its channels, rate and epoch; -o changes an option on top")
    ex.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                    help="split to record (default: test)")
    ex.add_argument("--trials", type=int, default=None, metavar="N",
                    help="N trials of the split, even across classes (seeded by --seed; default: all, in order)")
    ex.add_argument("--isi", type=float, default=0.5, metavar="S",
                    help="inter-stimulus interval after each epoch (s; default: 0.5)")
    ex.add_argument("--isi-jitter", type=float, default=0.2, metavar="S",
                    help="+ uniform jitter up to this (s; default: 0.2)")
    ex.add_argument("--board", default="synthetic",
                    help=".csv: BrainFlow master board (BoardIds name, or auto: the board with the recording's "
                         "rate and channels), checked before any trial is made (default: synthetic)")
    ex.add_argument("--seed", type=int, default=0,
                    help="seed of the trials picked, the ISIs and the background noise (default: 0)")
    _options_flags(ex)
    ex.set_defaults(func=_export_recording)
    return d
