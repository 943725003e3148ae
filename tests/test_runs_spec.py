"""Run specs: one owner of every parameter, validated before any work, stable run ids."""

from __future__ import annotations

import pickle
from dataclasses import fields

import pytest

from cptlib import balancers, grads
from cptlib.config import GRAD_WAYS, METHODS, TrainConfig
from cptlib.runs import experiments
from cptlib.runs.profiles import expand, pages, profile_runs
from cptlib.runs.spec import RunSpec, parse_overrides


def test_names_repeated_without_torch_match_the_registries():
    assert set(METHODS) == set(balancers.REGISTRY)
    assert set(GRAD_WAYS) == set(grads.WAYS)


def test_defaults_come_from_the_registry_then_the_profile_then_the_overrides():
    smoke = RunSpec.build("synthetic", "smoke")
    assert smoke.params["steps"] == experiments.SMOKE_TRAINING["steps"]
    quick = RunSpec.build("synthetic", "quick")
    assert quick.params["steps"] == 296 and quick.params["model_options"]["pretrained"]
    mine = RunSpec.build("synthetic", "quick", {"steps": 3, "c": [1, 1, 4, 1]})
    assert mine.params["steps"] == 3 and mine.params["c"] == [1.0, 1.0, 4.0, 1.0]
    # every TrainConfig field is a parameter (GroupDRO's eta can be swept, for example)
    assert {f.name for f in fields(TrainConfig)} <= set(smoke.params)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"c": [1, 1, 0, 1]}, r"c\[2\] must be a finite number > 0"),
    ({"c": [1, 1, 1]}, "c has 3 entries but the dataset has 4 groups"),
    ({"c": []}, "non-empty list"),
    ({"c": "1141"}, "non-empty list"),  # a string is never split into digits
    ({"c": 1141}, "non-empty list"),
    ({"c": [[1, 1], [1, 1]]}, r"c\[0\] must be a number"),
    ({"c": [1, -1, 1, 1]}, r"c\[1\]"),
    ({"sedd": 3}, "unknown parameter sedd .*known: .*seed"),
    ({"steps": -1}, "steps must be >= 1"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"steps": True}, "steps must be an integer"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"alpha": -1}, "alpha must be >= 0"),
    ({"lr": "nan"}, "lr must be a number, got 'nan'"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": 0}, "lr must be > 0"),
    ({"method": "sgd"}, "method must be one of"),
    ({"grad_way": "fast"}, "grad_way must be one of"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"data_size": "tiny"}, "data_size must be one of"),
    ({"model_options": [1]}, "model_options must be a mapping"),
    ({"experiment": "text"}, "experiment is set by the command"),
    ({"profile": "quick"}, "profile is set with --profile"),
])
def test_bad_parameters_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunSpec.build("synthetic", "smoke", overrides)


def test_unknown_experiment_and_profile_are_named():
    with pytest.raises(ValueError, match="unknown experiment 'nope'; known: toy, synthetic"):
        RunSpec.build("nope", "smoke")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        RunSpec.build("synthetic", "fast")


def test_toy_parameters_are_checked_too():
    assert RunSpec.build("toy", "quick").params["steps"] == 400
    for bad, message in (({"cs": [[1, 1, 1]]}, r"cs\[0\] has 3 entries"),
                         ({"methods": ["cpt", "x"]}, r"methods\[1\] must be one of"),
                         ({"cs": []}, "cs must be a non-empty list")):
        with pytest.raises(ValueError, match=message):
            RunSpec.build("toy", "smoke", bad)


def test_run_id_depends_on_what_the_run_computes_only():
    a = RunSpec.build("synthetic", "smoke", {"seed": 1})
    assert a.run_id == RunSpec.build("synthetic", "smoke", {"seed": 1, "c": None}).run_id
    assert a.run_id != RunSpec.build("synthetic", "smoke", {"seed": 2}).run_id
    moved = RunSpec.build("synthetic", "smoke", {"seed": 1, "results_dir": "/elsewhere"})
    assert moved.run_id == a.run_id and moved.record_path.parts[:2] == ("/", "elsewhere")
    # c = [1, 1, 4, 1] and [1.0, 1.0, 4.0, 1.0] are the same run
    ints = RunSpec.build("synthetic", "smoke", {"c": [1, 1, 4, 1]})
    assert ints.run_id == RunSpec.build("synthetic", "smoke", {"c": [1.0, 1, 4.0, 1]}).run_id
    assert a.record_path.name == f"{a.run_id}.json"
    assert a.record_path.parent.parts[-2:] == ("smoke", "synthetic")


def test_a_spec_is_immutable_and_picklable():
    spec = RunSpec.build("synthetic", "smoke", {"seed": 3})
    spec.params["seed"] = 99  # a copy: the spec does not change
    assert spec.params["seed"] == 3
    with pytest.raises(AttributeError):
        spec.profile = "quick"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert "synthetic(method=cpt" in repr(spec) and spec.run_id in repr(spec)


def test_overrides_parse_as_yaml_and_bad_ones_are_named():
    assert parse_overrides(["c=[1,1,4,1]", "seed=3", "method=cpt"]) == {
        "c": [1, 1, 4, 1], "seed": 3, "method": "cpt"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["seed"])
    with pytest.raises(ValueError, match="parameter c: .* not a valid YAML value"):
        parse_overrides(["c=[1,2"])
    with pytest.raises(ValueError, match="given twice"):
        parse_overrides(["seed=1", "seed=2"])


def test_entries_expand_over_seeds_and_control_vectors():
    runs = expand({"experiment": "x", "method": "cpt", "seeds": [0, 1], "cs": [[1, 1], [4, 1]]})
    assert {(r["seed"], tuple(r["c"])) for r in runs} == {(0, (1, 1)), (0, (4, 1)),
                                                        (1, (1, 1)), (1, (4, 1))}
    assert expand({"experiment": "x", "c": [1, 1]}) == [{"experiment": "x", "c": [1, 1]}]
    with pytest.raises(ValueError, match="seeds must be a non-empty list"):
        expand({"experiment": "x", "seeds": 3})


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_profile_entry_and_page_is_a_valid_spec(profile):
    specs = profile_runs(profile)
    assert specs and len({s.run_id for s in specs}) == len(specs)
    assert all(s.profile == profile for s in specs)
    assert set(pages(profile).values()) <= set(specs)


def test_a_typo_in_profiles_is_an_error_naming_the_entry():
    data = {"smoke": {"runs": [{"experiment": "synthetic", "sedd": 1}]}, "quick": {},
            "paper": {}}
    with pytest.raises(ValueError, match=r"profiles.yaml smoke.runs\[0\]: unknown parameter sedd"):
        profile_runs("smoke", profiles=data)
    data = {"smoke": {"experiments": {"synthetic": {"lrr": 1}}}, "quick": {}, "paper": {}}
    with pytest.raises(ValueError, match="unknown smoke.experiments.synthetic in profiles.yaml"):
        RunSpec.build("synthetic", "smoke", profiles=data)


def test_every_paper_c_has_one_entry_per_group():
    for spec in profile_runs("paper"):
        if spec.params["c"] is not None:
            assert len(spec.params["c"]) == spec.info.n_groups


def test_precision_auto_resolves_to_what_the_cpu_computes_before_the_run_id(monkeypatch):
    """A bf16 run and an fp32 run are two runs: "auto" never hides which one a record is."""
    from cptlib import _env
    from cptlib.config import resolve_precision
    from cptlib.runs import spec as spec_module

    assert resolve_precision("auto", native_bf16=True) == "bf16"
    assert resolve_precision("auto", native_bf16=False) == "fp32"
    assert resolve_precision("fp32", native_bf16=True) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        resolve_precision("fp16", native_bf16=True)
    ids = {}
    for native in (True, False):
        monkeypatch.setattr(spec_module, "native_bf16", lambda n=native: n)
        auto = RunSpec.build("synthetic", "smoke", {"precision": "auto"})
        explicit = RunSpec.build("synthetic", "smoke",
                                 {"precision": "bf16" if native else "fp32"})
        assert auto.params["precision"] == explicit.params["precision"]
        assert auto.run_id == explicit.run_id
        ids[native] = auto.run_id
    assert ids[True] != ids[False]
    assert isinstance(_env.native_bf16(), bool)


def test_cpu_flags_name_the_bf16_instructions(tmp_path):
    from cptlib import _env

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert "avx512_bf16" in _env.cpu_flags(info) and _env.native_bf16(_env.cpu_flags(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert not _env.native_bf16(_env.cpu_flags(info))
    assert _env.cpu_flags(tmp_path / "absent") == set()
