"""Typed data set options (issue #23): each registry entry declares a dataclass, strings are parsed only at the
command line, library calls take the dataclass (or a stored dict), and `eegsine data info` answers from the
options without generating synthetic-vep (issue #29)."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from eegsine.commands.main import build_parser, main
from eegsine.data import REGISTRY, describe_eeg, get_spec, load_eeg
from eegsine.data import synthetic_vep
from eegsine.data.options import DataOptions
from eegsine.data.synthetic_vep import SyntheticVEPOptions
from eegsine.errors import UserError

SMALL = {"image_set": "digits", "n_chans": 6, "n_times": 40, "sfreq": 200.0, "n_images_per_class": 5,
         "n_subjects": 2, "n_classes": 3, "progress": False}
# loader arguments that are not options, and why: the name's tail fills uea's problem and raw's path;
# synthetic-vep's config is a whole SyntheticVEPConfig whose fields are options themselves
NOT_OPTIONS = {"uea": {"problem"}, "raw": {"path"}, "synthetic-vep": {"config"}}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_data_set_declares_its_loader_options(name):
    spec = REGISTRY[name]
    assert issubclass(spec.options, DataOptions) and spec.options is not DataOptions
    params = {k: p for k, p in inspect.signature(spec.load).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k not in NOT_OPTIONS.get(name, set())}
    fields = {f.name: f for f in dataclasses.fields(spec.options)}
    if name == "synthetic-vep":  # **fields: the generator config's fields
        params.update({f.name: None for f in dataclasses.fields(synthetic_vep.SyntheticVEPConfig)})
    assert set(fields) == set(params), name
    defaults = spec.options()
    for key, p in params.items():
        if p is not None and p.default is not inspect.Parameter.empty:
            want = list(p.default) if isinstance(p.default, tuple) else p.default
            assert getattr(defaults, key) == want, (name, key)
    for key, tp, default, text in spec.options.help_rows():
        assert tp and default, (name, key)


def test_cli_options_parse_against_the_dataclass(capsys):
    spec = get_spec("synthetic-vep")
    opts = spec.parse("synthetic-vep", ["n_chans=32", "sfreq=250", "image_set=digits", "bandpass=[1, 40]",
                                        "progress=false", "n-subjects=2"])
    assert isinstance(opts, SyntheticVEPOptions)
    assert (opts.n_chans, opts.sfreq, opts.image_set, opts.bandpass, opts.progress, opts.n_subjects) == (
        32, 250.0, "digits", [1.0, 40.0], False, 2)
    assert isinstance(opts.sfreq, float)
    for argv, message in ((["-o", "n_chans=abc"], "synthetic-vep: option 'n_chans': expected int, got str 'abc'"),
                          (["-o", "nchans=3"], "synthetic-vep: unknown option 'nchans'"),
                          (["-o", "n_chans"], "synthetic-vep: option 'n_chans': expected KEY=VALUE")):
        assert main(["data", "info", "synthetic-vep", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert "(options: image_set, n_classes, n_images_per_class, n_subjects" in err  # the valid keys


def test_stored_dicts_still_load_and_equal_the_dataclass():
    """Run configs and model provenance hold dicts (and older ones "none" for no band-pass): same options, same set."""
    stored = {**SMALL, "root": None, "bandpass": "none", "seed": 3}
    a = load_eeg("synthetic-vep", stored)
    b = load_eeg("synthetic-vep", get_spec("synthetic-vep").make_options("synthetic-vep", stored))
    c = load_eeg("synthetic-vep", **{**SMALL, "seed": 3})
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.x, c.x)
    assert a.preprocessing == c.preprocessing and not a.preprocessing.has_filters
    with pytest.raises(UserError, match="options are DigitsOptions, expected SyntheticVEPOptions"):
        load_eeg("synthetic-vep", get_spec("digits").options())
    with pytest.raises(UserError, match="synthetic-vep: option 'bandpass'"):
        load_eeg("synthetic-vep", {**SMALL, "bandpass": [30.0, 150.0]})  # above Nyquist: refused before generating


@pytest.mark.parametrize("extra", [{}, {"bandpass": [2.0, 40.0]}, {"n_trials": 60, "val_fraction": 0.0},
                                   {"n_classes": 0, "trials_per_image": 2}])
def test_describe_tells_what_loading_makes(extra):
    opts = {**SMALL, **extra}
    info, ds = describe_eeg("synthetic-vep", opts), load_eeg("synthetic-vep", opts)
    assert info.from_options and info.preprocessing == ds.preprocessing
    assert info.n_trials == len(ds.x) and info.classes == ds.classes and info.n_subjects == len(set(ds.subject))
    assert info.splits == {k: len(v) for k, v in ds.splits.items()}


def test_info_answers_from_the_options_without_generating(monkeypatch, capsys):
    def no(*a, **k):
        raise AssertionError("eegsine data info generated the set")

    monkeypatch.setattr(synthetic_vep, "generate", no)
    assert main(["data", "info", "synthetic-vep"]) == 0  # the default 12,000 trials: described, not made
    out = capsys.readouterr().out
    assert "channels   128: Fp1, Fpz, Fp2," in out and "sfreq      1000 Hz" in out and "units      uV" in out
    assert "reference  as-recorded" in out and "filters    highpass none, lowpass none (Nyquist 500 Hz)" in out
    assert "trials     12000 (train 9600, val 1200, test 1200), 10 classes, 6 subject(s)" in out
    assert main(["data", "info", "synthetic-vep", "-o", "bandpass=[0.5, 95]", "-o", "phase=zero-phase"]) == 0
    assert "filters    highpass 0.5 Hz, lowpass 95 Hz, Butterworth order 4, zero-phase" in capsys.readouterr().out


def test_data_help_lists_every_options_type_and_default():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices["data"]
    actions = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert set(actions) == {"list", "fetch", "info", "export-recording"}
    for action in ("info", "export-recording"):
        text = actions[action].format_help()
        for name, spec in REGISTRY.items():
            shown = {"uea": "uea:<Name>", "raw": "raw:<path>"}.get(name, name)
            assert f"{shown} options (-o KEY=VALUE):" in text
            for key, tp, default, _ in spec.options.help_rows():
                assert f"  {key} {tp} = {default}" in text
    ex = actions["export-recording"].format_help()
    assert "--out REC" in ex and "(default: '')" not in ex and "--like BUNDLE" in ex
    assert "-o KEY=VALUE" not in actions["list"].format_help() and "--out" not in actions["info"].format_help()
