"""``--set key=value``: one parser (``osdpm_lib.settings``) for ``python -m osdpm_lib.train``, the runner and
``sets.yml``; profile overrides registered under a name of their own."""

import pytest

from osdpm_lib import profiles, settings, train_cli
from osdpm_lib.baselines import profiles as baseline_profiles


@pytest.mark.parametrize("text, hint, value", [
    ("1", int, 1), (" 2e-5", float, 2e-5), ("false", bool, False), ("on", bool, True),
    ("none", int | None, None), ("3", int | None, 3), ("IMAGENET1K_V1", str | None, "IMAGENET1K_V1"),
    ("0", list[int], [0]), ("0,1, 2", list[int], [0, 1, 2]), ("[0, 1]", list[int], [0, 1]),
    ("VSE++,GaLR", list[str], ["VSE++", "GaLR"]), ("0.5,1", tuple[float, float], (0.5, 1.0)),
    ("(0.5, 1.0)", tuple[float, float] | None, (0.5, 1.0)), ('{"a": 1}', dict, {"a": 1}),
])
def test_text_is_read_as_the_field_type(text, hint, value):
    got = settings.typed("k", text, hint)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("value, hint, expected", [
    (1, int, 1), (1, float, 1.0), ([0], list[int], [0]), ([0.5, 1], tuple[float, float], (0.5, 1.0)),
    (None, str | None, None), (True, bool, True),
])
def test_yaml_values_are_checked_by_the_same_reader(value, hint, expected):
    got = settings.typed("k", value, hint)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, hint, message", [
    ("ten", int, "k takes int"), ("1.5", int, "not an integer|invalid literal"), (1.5, int, "not an integer"),
    (True, int, "not a number"), ("maybe", bool, "k takes bool"), ("a,b", list[int], r"k takes list\[int\]"),
    ("0.5", tuple[float, float], "expected 2 values"), ("[1]", dict, "not a JSON object"), (3, str, "not text"),
])
def test_bad_values_are_refused_naming_key_and_type(value, hint, message):
    with pytest.raises(settings.UsageError, match=message):
        settings.typed("k", value, hint)


def test_train_cli_reads_through_the_shared_parser(monkeypatch):
    seen = []
    real = settings.typed
    monkeypatch.setattr(settings, "typed", lambda *a, **kw: seen.append(a[0]) or real(*a, **kw))
    assert train_cli.set_value("crop_scale=0.5,1") == ("crop_scale", (0.5, 1.0))
    assert seen == ["crop_scale"]
    assert train_cli.UsageError is settings.UsageError


def test_parse_covers_the_profile_data_keys_and_the_baselines():
    got = settings.parse(["epochs=1", "seeds=0", "n_images=40", "baselines.weights=none",
                          "baselines.systems=VSE++", "epochs=2"], "finetune")
    assert got == {"epochs": 2, "seeds": [0], "n_images": 40, "baselines.weights": None,
                   "baselines.systems": ["VSE++"]}
    assert settings.parse({"epochs": 1, "seeds": [0]}, "ci") == {"epochs": 1, "seeds": [0]}


@pytest.mark.parametrize("items, message", [
    (["epoch=1"], "'epoch' is not a key of profile 'finetune'"),
    (["baselines.epoch=1"], "'baselines.epoch' is not a key of baseline profile 'finetune'"),
    (["seed=1"], "use seeds"), (["variant=osdpm"], "cannot be set"), (["baselines.system=VSE++"], "cannot be set"),
    (["epochs"], "expected KEY=VALUE"), (["seeds=first"], "seeds takes list"),
])
def test_unknown_or_reserved_keys_are_errors_naming_key_and_profile(items, message):
    with pytest.raises(settings.UsageError, match=message):
        settings.parse(items, "finetune")


def test_apply_registers_a_profile_of_its_own(profile_tables):
    before = profiles.get("ci"), baseline_profiles.baseline_profile("ci")
    name = settings.apply("ci", {"epochs": 1, "seeds": [0], "n_images": 40, "baselines.epochs": 1})
    assert name.startswith("ci.set-") and name == settings.apply("ci", {"seeds": [0], "epochs": 1, "n_images": 40,
                                                                         "baselines.epochs": 1})
    assert profiles.get(name) == before[0] | {"epochs": 1, "seeds": [0], "n_images": 40}
    assert baseline_profiles.baseline_profile(name) == before[1] | {"epochs": 1}
    assert profiles.train_config(name, "osdpm", 0).epochs == 1 and profiles.data_sizes(name)["n_images"] == 40
    assert (profiles.get("ci"), baseline_profiles.baseline_profile("ci")) == before      # the base is untouched
    assert settings.apply("ci", {}) == "ci"
    assert settings.apply("finetune", settings.SMOKE) == "finetune.smoke"


def test_apply_refuses_a_value_the_configuration_refuses(profile_tables):
    with pytest.raises(settings.UsageError, match="unknown epoch_unit 'pairs'"):
        settings.apply("ci", {"epoch_unit": "pairs"})
    with pytest.raises(settings.UsageError, match="unknown system"):
        settings.apply("ci", {"baselines.systems": ["VSE+++"]})
    assert not [p for p in profiles.PROFILES if p.startswith("ci.")]


def test_tag_and_chain_name():
    assert settings.tag({}) == "" and settings.chain_name("rsicd", {}) == "rsicd"
    assert settings.chain_name("rsicd", dict(reversed(settings.SMOKE.items()))) == "rsicd.smoke"
    one, two = settings.tag({"epochs": 1}), settings.tag({"epochs": 2})
    assert one != two and one.startswith("set-") and settings.tag({"epochs": 1}) == one
