"""Typed experiment config: presets, overrides, one-line errors, save/load round trip."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import yaml

import taskology.config.sections as sections_module
from taskology.config import (
    CAMERA_TASKS,
    ExperimentConfig,
    apply_overrides,
    config_to_yaml,
    load_config,
    parse_camera_hw,
    parse_cluster_address,
    parse_override,
    save_config,
)
from taskology.errors import ConfigError, TaskologyError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "taskology" / "configs").glob("*.yaml"))


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path: Path | None = None, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ------------------------------------------------------------------------------------------ presets


def test_the_three_presets_exist() -> None:
    assert {p.name for p in PRESETS} >= {"default.yaml", "demo.yaml", "consistency.yaml", "consistency-gpu.yaml"}
    assert load_config("demo") == load_config(ROOT / "taskology/configs/demo.yaml")  # by name, from any folder


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_and_round_trips(preset: Path, tmp_path: Path) -> None:
    config = load_config(preset)
    assert config.enabled_tasks(), f"{preset.name} trains no task"
    saved = save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(saved) == config


def test_default_yaml_documents_every_key_with_its_default_value() -> None:
    raw = yaml.safe_load((ROOT / "taskology/configs/default.yaml").read_text())

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
        return out

    assert keys(raw) == keys(ExperimentConfig().model_dump(mode="json"))
    assert load_config(ROOT / "taskology/configs/default.yaml") == ExperimentConfig()


def test_demo_preset_is_the_small_laptop_run() -> None:
    demo = load_config(ROOT / "taskology/configs/demo.yaml")
    height, width = demo.sim.camera_hw
    assert demo.data.camera_hw == demo.sim.camera_hw and height * width <= 64 * 208  # laptop-sized
    assert demo.enabled_tasks() == ["depth", "normals", "segmentation", "motion", "detection", "tracking"]
    assert all(task.label_fraction <= 0.2 for task in demo.tasks.values())
    assert demo.train.steps <= 1000 and demo.sim.sequences <= 12


# ---------------------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("override, path, expected", [
    ("train.steps=2000", ("train", "steps"), 2000),
    ("tasks.depth.label_fraction=0.05", ("tasks", "depth", "label_fraction"), 0.05),
    ("tasks.depth.lr=1e-3", ("tasks", "depth", "lr"), 0.001),  # PyYAML reads 1e-3 as text
    ("cluster.dashboard=false", ("cluster", "dashboard"), False),
    ("train.seeds=[1,2]", ("train", "seeds"), [1, 2]),
    ("cluster.n_workers=null", ("cluster", "n_workers"), None),
    ("cluster.max_restarts=3", ("cluster", "max_restarts"), 3),
    ("cluster.address=tcp://10.1.2.3:8786", ("cluster", "address"), "tcp://10.1.2.3:8786"),
    ("sim.camera=128x416", ("sim", "camera"), "128x416"),
    ("sim.ego_speed_mps=[2,12]", ("sim", "ego_speed_mps"), (2.0, 12.0)),
    ("data.root=/tmp/shards", ("data", "root"), Path("/tmp/shards")),
    ("relations.photometric.weight=0", ("relations", "photometric", "weight"), 0.0),
])
def test_override_values_are_parsed_as_yaml(override: str, path: tuple[str, ...], expected: object) -> None:
    node: object = load_config(None, [override])
    for key in path:
        node = node[key] if isinstance(node, dict) else getattr(node, key)
    assert node == expected and type(node) is type(expected)


def test_an_error_names_the_override_it_concerns() -> None:
    message = _error(overrides=("train.steps=5", "tasks.depth.lr=-1", "train.log_every=3"))
    assert message.startswith("override 'tasks.depth.lr=-1': tasks.depth.lr: must be > 0 and <= 10; found -1")
    assert _error(overrides=("train.steps=5", "train={mode: x}")).startswith("override 'train={mode: x}': train.mode")


def test_overrides_apply_in_order_and_leave_the_input_unchanged() -> None:
    base = ExperimentConfig()
    changed = apply_overrides(base, ["train.steps=5", "train.steps=7", "tasks.depth.width=8"])
    assert changed.train.steps == 7 and changed.tasks["depth"].width == 8
    assert base.train.steps == 2000 and base.tasks["depth"].width == 16


def test_override_edits_one_task_and_keeps_the_others() -> None:
    config = load_config(None, ["tasks.depth.lr=0.01"])
    assert list(config.tasks) == list(CAMERA_TASKS)
    assert config.tasks["depth"].lr == 0.01 and config.tasks["normals"].lr == 0.001


def test_a_file_listing_tasks_replaces_the_default_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "tasks:\n  depth: {label_fraction: 0.02}\nrelations: {}\n")
    config = load_config(path)
    assert list(config.tasks) == ["depth"] and config.tasks["depth"].label_fraction == 0.02
    assert config.tasks["depth"].batch_size == 8  # missing keys take the defaults
    assert config.enabled_relations() == {}
    assert config.train == ExperimentConfig().train  # missing sections take the defaults


def test_parse_override_known_answers() -> None:
    assert parse_override("train.steps=10") == (["train", "steps"], 10)
    assert parse_override("data.root=a=b") == (["data", "root"], "a=b")  # split at the first '='
    assert parse_override("cluster.n_workers=") == (["cluster", "n_workers"], None)
    for bad in ("train.steps", "=3", ".train=3", "train..steps=3", "train steps=3"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_override(bad)


def test_enabled_tasks_and_relations_follow_the_flags() -> None:
    config = load_config(None, ["tasks.motion.enabled=false", "relations.photometric.enabled=false",
                                "relations.depth_normals.weight=2.5"])
    assert config.enabled_tasks() == ["depth", "normals", "segmentation"]
    assert config.enabled_relations() == {"depth_normals": 2.5, "segmentation_motion": 1.0,
                                          "segmentation_geometry": 1.0}


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("override, expected", [
    ("train.stpes=5", "override 'train.stpes=5': train.stpes: unknown key; allowed: steps, mode, seeds, device,"),
    ("trian.steps=5", "trian: unknown key; allowed: data, sim, lidar, tasks, relations, train, cluster, exchange"),
    ("tasks.depth.lrr=1", "tasks.depth.lrr: unknown key; allowed: enabled, label_fraction, lr, batch_size, width"),
    ("cluster.tls.ca=x", "cluster.tls.ca: unknown key; allowed: ca_file, cert_file, key_file"),
    ("train.steps=0", "train.steps: must be >= 1; found 0"),
    ("train.steps=abc", "train.steps: expected an integer >= 1; found 'abc'"),
    ("train.steps=true", "train.steps: expected an integer >= 1; found True (bool)"),
    ("train.steps=2.5", "train.steps: expected an integer"),
    ("tasks.depth.label_fraction=0", "tasks.depth.label_fraction: must be > 0 and <= 1; found 0"),
    ("tasks.depth.label_fraction=1.01", "tasks.depth.label_fraction: must be > 0 and <= 1; found 1.01"),
    ("tasks.depth.lr=yes", "tasks.depth.lr: expected a number"),
    ("relations.photometric.weight=-1", "relations.photometric.weight: must be >= 0; found -1"),
    ("data.mediator_fraction=1", "data.mediator_fraction: must be >= 0 and < 1; found 1"),
    ("sim.lidar_beams=24", "sim.lidar_beams: expected one of 0, 16, 32, 64 or 128; found 24"),
    ("train.mode=both", "train.mode: expected one of 'alone' or 'collective'; found 'both'"),
    ("train.device=tpu", "train.device: expected one of 'auto', 'cpu' or 'cuda'"),
    ("exchange.payload_dtype=int8", "exchange.payload_dtype: expected one of 'float16' or 'float32'"),
    ("train.seeds=[0,0]", "train.seeds: seeds must be distinct; found [0, 0]"),
    ("train.seeds=[]", "train.seeds: expected at least 1 item(s); found []"),
    ("train.seeds=[0,-3]", "train.seeds.1: must be >= 0; found -3"),
    ("cluster.n_workers=0", "cluster.n_workers: must be >= 1; found 0"),
    ("cluster.max_restarts=-1", "cluster.max_restarts: must be >= 0; found -1"),
    ("cluster.restart_backoff_s=-2", "cluster.restart_backoff_s: must be >= 0"),
    ("data.camera=64by208", "data.camera: expected a camera size 'HxW' like '64x208'; found '64by208'"),
    ("sim.camera=5000x208", "sim.camera: camera sides must be in 1..4096 pixels"),
    ("sim.camera=0x208", "sim.camera: expected a camera size 'HxW' like '64x208'; found 520"),  # YAML hex
    ("sim.carla_host=localhost", "sim.carla_host: expected HOST:PORT"),
    ("sim.ego_speed_mps=[12,2]", "sim.ego_speed_mps: expected [min, max] with 0 < min <= max <= 40 m/s; found [12.0, 2.0]"),
    ("sim.ego_speed_mps=[0,5]", "sim.ego_speed_mps: expected [min, max] with 0 < min <= max <= 40 m/s"),
    ("sim.ego_speed_change_s=1.5", "sim.ego_speed_change_s: unknown key"),
    ("train.teacher_decay=0.9", "train.teacher_decay: unknown key"),
    ("exchange.anchor_weight=0.1", "exchange.anchor_weight: unknown key"),
    ("tasks.motion.augment=true", "tasks.motion.augment: unknown key"),
    ("cluster.address=tcp://host", "cluster.address: expected none, local, tcp://HOST:PORT or tls://HOST:PORT"),
    ("cluster.address=http://h:1", "cluster.address: expected none, local, tcp://HOST:PORT or tls://HOST:PORT"),
    ("train=5", "train: expected a mapping (section); found 5"),
    ("train.steps.max=5", "train.steps is a value, not a section"),
    ("train.steps=[1", "the value is not valid YAML"),
])
def test_bad_overrides_name_the_key_and_what_is_allowed(override: str, expected: str) -> None:
    message = _error(overrides=(override,))
    assert message.startswith(f"override {override!r}: ")
    assert expected in message


def test_unknown_task_and_relation_list_the_registered_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskology.losses import RELATIONS
    from taskology.tasks import TASKS

    assert (f"tasks.dpth: unknown task; available: {', '.join(sorted(TASKS))}"
            in _error(overrides=("tasks.dpth.lr=0.1",)))
    assert (f"relations.fotometric: unknown relation; available: {', '.join(sorted(RELATIONS))}"
            in _error(overrides=("relations.fotometric.weight=1",)))
    monkeypatch.delitem(TASKS, "normals")  # a registry without one of the defaults
    assert "default config: tasks.normals: unknown task; available: depth, detection, motion, segmentation, tracking" in _error()


def test_a_task_class_with_a_wrong_data_declaration_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskology.tasks import TASKS, Task

    class Peeking(Task):
        name = "peeking"
        input_layers = ("camera/rgb", "camera/depth")  # a label as an input would leak into the mediator split

    monkeypatch.setitem(TASKS, "peeking", Peeking)
    assert ("tasks.peeking: task 'peeking' of the registry: input layer 'camera/depth' is not visible in every "
            "split" in _error(overrides=("tasks.peeking.enabled=true",)))


def test_the_real_registries_accept_the_default_experiment() -> None:
    assert set(CAMERA_TASKS) <= set(sections_module.available_tasks())
    assert set(ExperimentConfig().relations) <= set(sections_module.available_relations())


def test_no_enabled_task_is_an_error() -> None:
    message = _error(overrides=tuple(f"tasks.{name}.enabled=false" for name in CAMERA_TASKS))
    assert "tasks: no task is enabled" in message


def test_errors_from_a_file_name_the_file_and_the_dotted_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  stpes: 5\n")
    message = _error(path)
    assert message.startswith(f"{path}: train.stpes: unknown key; allowed: steps, mode, seeds")
    path = _write(tmp_path, "tasks:\n  depth:\n    label_fraction: 2\n")
    assert _error(path) == f"{path}: tasks.depth.label_fraction: must be > 0 and <= 1; found 2"


def test_several_problems_are_counted_on_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "train: {steps: 0, log_every: 0, mode: x}\n")
    message = _error(path)
    assert message.endswith("(and 2 more problems)")


@pytest.mark.parametrize("text, expected", [
    ("train:\n  steps: [1\n", "not valid YAML at line 3"),
    ("train: {steps: 1}\ntrain: {steps: 2}\n", "not valid YAML at line 2, column 1: duplicate key 'train'"),
    ("- 1\n- 2\n", "expected a mapping of sections"),
    ("tasks: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _error(_write(tmp_path, text))


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such config file"
    assert load_config(_write(tmp_path, "# nothing but a comment\n")) == ExperimentConfig()


def test_yaml_text_numbers_and_strict_types_in_files(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "tasks:\n  depth: {lr: 1e-4, weight_decay: 0}\n"))
    assert config.tasks["depth"].lr == pytest.approx(1e-4) and config.tasks["depth"].weight_decay == 0.0
    assert "tasks.depth.lr: expected a number" in _error(_write(tmp_path, "tasks:\n  depth: {lr: true}\n"))
    assert "train.steps: expected an integer" in _error(_write(tmp_path, "train: {steps: '100'}\n"))
    assert "cluster.dashboard: expected true or false" in _error(_write(tmp_path, "cluster: {dashboard: 1}\n"))


def test_config_error_is_a_user_error() -> None:
    assert issubclass(ConfigError, TaskologyError) and ConfigError.exit_code == 2


# -------------------------------------------------------------------------------------- TLS, parsing


def test_tls_needs_all_three_existing_files(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca_file", "cert_file", "key_file")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = [f"cluster.tls.{name}={path}" for name, path in files.items()]
    config = load_config(None, ["cluster.address=tls://127.0.0.1:8786", *tls])
    assert config.cluster.tls.configured and config.cluster.tls.key_file == files["key_file"]
    assert load_config(None, tls).cluster.address == "local"  # TLS for a local cluster is fine
    assert "cluster.tls.cert_file: give all three" in _error(overrides=(tls[0],))
    assert "cluster.tls: address tls://h:1 needs tls.ca_file" in _error(overrides=("cluster.address=tls://h:1",))
    assert "cluster.address: TLS files are set but the address is plaintext" in _error(
        overrides=(*tls, "cluster.address=tcp://h:1"))
    files["key_file"].unlink()
    assert f"cluster.tls.key_file: no such file '{files['key_file']}'" in _error(overrides=tuple(tls))


@pytest.mark.parametrize("text, expected", [
    ("64x208", (64, 208)), ("128X416", (128, 416)), (" 32 x 96 ", (32, 96)), ("4096x1", (4096, 1)),
])
def test_parse_camera_hw_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_camera_hw(text) == expected


@pytest.mark.parametrize("text", ["64", "64x", "x208", "64x208x3", "-64x208", "0x208", "64x4097", "6.4x208", ""])
def test_parse_camera_hw_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HxW|1..4096"):
        parse_camera_hw(text)


@pytest.mark.parametrize("text, expected", [
    ("none", "none"), ("LOCAL", "local"), ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
    ("TLS://sched.example.org:8786", "tls://sched.example.org:8786"), ("tcp://[::1]:8786", "tcp://[::1]:8786"),
])
def test_parse_cluster_address_accepts(text: str, expected: str) -> None:
    assert parse_cluster_address(text) == expected


@pytest.mark.parametrize("text", ["", "remote", "tcp://h", "tcp://h:0", "tcp://h:70000", "ws://h:1", "tcp://:1",
                                  "127.0.0.1:8786"])
def test_parse_cluster_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        parse_cluster_address(text)


# --------------------------------------------------------------------------------------------- save


def test_saved_yaml_holds_every_key_and_reloads_equal(tmp_path: Path) -> None:
    config = load_config(ROOT / "taskology/configs/demo.yaml", ["train.seeds=[3, 4]", "tasks.depth.lr=2e-4",
                                                      "cluster.address=none"])
    text = config_to_yaml(config)
    assert yaml.safe_load(text) == config.model_dump(mode="json")
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config
    assert os.listdir(tmp_path) == ["config.yaml"]  # no temp file left behind


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_config(ExperimentConfig(), tmp_path / "config.yaml")
    before = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    import taskology.atomic

    monkeypatch.setattr(taskology.atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_config(load_config(None, ["train.steps=1"]), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_lockstep_lag_that_publication_can_never_meet_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"exchange\.lockstep_lag_steps: 3 can never be met.*use >= 9"):
        load_config(None, ["exchange.lockstep_lag_steps=3", "exchange.publish_every_steps=10"])
    config = load_config(None, ["exchange.lockstep_lag_steps=0", "exchange.publish_every_steps=1",
                                "exchange.refresh_every_s=0"])
    assert config.exchange.lockstep_lag_steps == 0 and config.exchange.refresh_every_s == 0.0


def test_relation_receivers_scale_the_weight_per_receiving_task() -> None:
    from taskology.engine.registry import Registry

    relations_for = Registry.current().relations_for

    cfg = ExperimentConfig.model_validate(
        {"relations": {"depth_normals": {"weight": 2.0, "receivers": {"normals": 0.0}},
                       "segmentation_geometry": {"weight": 0.5, "receivers": {"depth": 0.2}}}})
    fed = {task: {r.name: w for r, w in relations_for(task, cfg)} for task in CAMERA_TASKS}
    assert fed["depth"]["depth_normals"] == 2.0 and "depth_normals" not in fed["normals"]
    assert fed["depth"]["segmentation_geometry"] == pytest.approx(0.1)
    assert fed["normals"]["segmentation_geometry"] == 0.5 and fed["segmentation"]["segmentation_geometry"] == 0.5
    assert ("relations.depth_normals.receivers.motion: not a task this relation teaches; it teaches depth, normals"
            in _error(overrides=("relations.depth_normals.receivers.motion=0",)))
    assert "relations.depth_normals.receivers.normals" in _error(overrides=("relations.depth_normals.receivers.normals=-1",))


def test_relation_options_are_checked_against_what_the_relation_takes() -> None:
    cfg = load_config(None, ["relations.segmentation_geometry.options.segmentation_tolerance_deg=30"])
    assert cfg.relations["segmentation_geometry"].options == {"segmentation_tolerance_deg": 30.0}
    assert ("relations.segmentation_geometry.options.segmentation_tolerance_deg: must be in [0, 90), got 90"
            in _error(overrides=("relations.segmentation_geometry.options.segmentation_tolerance_deg=90",)))
    assert ("relations.depth_normals.options.tolerance: unknown option; this relation takes none"
            in _error(overrides=("relations.depth_normals.options.tolerance=1",)))
    assert ("relations.segmentation_motion.options.tol: unknown option; this relation takes segmentation_tolerance_m"
            in _error(overrides=("relations.segmentation_motion.options.tol=1",)))
    assert "relations.segmentation_motion.options.segmentation_tolerance_m" in _error(
        overrides=("relations.segmentation_motion.options.segmentation_tolerance_m=-0.1",))


def test_relation_weight_by_labels_scales_what_a_task_receives_by_its_label_fraction() -> None:
    from taskology.engine.registry import Registry

    relations_for = Registry.current().relations_for

    points = "train.relation_weight_by_labels=[[0.02, 1.0], [0.2, 0.5], [1.0, 0.0]]"
    cfg = load_config(None, [points, "tasks.depth.label_fraction=0.02", "tasks.normals.label_fraction=0.2",
                             "tasks.segmentation.label_fraction=1.0", "tasks.motion.label_fraction=0.002"])
    fed = {task: {r.name: w for r, w in relations_for(task, cfg)} for task in CAMERA_TASKS}
    plain = {task: {r.name: w for r, w in relations_for(task, load_config(None, []))} for task in CAMERA_TASKS}
    assert fed["depth"] == plain["depth"] and fed["motion"] == plain["motion"]  # at or below the first point
    assert fed["normals"] == {name: w * 0.5 for name, w in plain["normals"].items()}
    assert fed["segmentation"] == {}  # factor 0 at full labels: fed nothing
    # between points: linear in log fraction (0.02 -> 1, 0.2 -> 0.5: 10 ** -1.5 is half way)
    assert cfg.train.relation_factor(10 ** -1.5 * 2) == pytest.approx(0.75)
    at_points = load_config(None, ["train.relation_weight_by_labels=[[0.02, 1.0], [0.1, 0.1], [1.0, 0.3]]"]).train
    assert [at_points.relation_factor(f) for f in (0.02, 0.1, 1.0)] == [1.0, 0.1, 0.3]  # exactly the points
    assert "label fractions must be strictly increasing" in _error(
        overrides=("train.relation_weight_by_labels=[[0.5, 1.0], [0.1, 0.2]]",))
    assert "train.relation_weight_by_labels" in _error(overrides=("train.relation_weight_by_labels=[[0, 1.0]]",))


def test_a_task_s_own_relation_weight_by_labels_replaces_train_s_for_that_task_only() -> None:
    from taskology.engine.registry import Registry

    relations_for = Registry.current().relations_for

    overrides = ["train.relation_weight_by_labels=[[0.02, 1.0], [1.0, 0.5]]", "tasks.depth.label_fraction=1.0",
                 "tasks.normals.label_fraction=1.0", "tasks.depth.relation_weight_by_labels=[[0.02, 1.0], [1.0, 0.0]]"]
    cfg = load_config(None, overrides)
    plain = {task: {r.name: w for r, w in relations_for(task, load_config(None, []))} for task in CAMERA_TASKS}
    assert relations_for("depth", cfg) == []  # its own points: factor 0 at full labels
    assert {r.name: w for r, w in relations_for("normals", cfg)} == {n: w * 0.5 for n, w in plain["normals"].items()}
    # an empty list of its own means factor 1, not "use train's"
    own_empty = load_config(None, overrides[:3] + ["tasks.depth.relation_weight_by_labels=[]"])
    assert {r.name: w for r, w in relations_for("depth", own_empty)} == plain["depth"]
    assert "tasks.depth.relation_weight_by_labels" in _error(
        overrides=("tasks.depth.relation_weight_by_labels=[[0.5, 1.0], [0.1, 0.2]]",))
    assert "tasks.motion.relation_weight_by_labels" in _error(
        overrides=("tasks.motion.relation_weight_by_labels=[[0.1, -1.0]]",))


def test_world_options_belong_to_the_embedded_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections_module, "_carla_importable", lambda: True)
    with pytest.raises(ConfigError, match="ego_speed_mps: options of the embedded simulator; the carla backend"):
        load_config(None, ["sim.backend=carla", "sim.ego_speed_mps=[2, 12]"])
    assert load_config(None, ["sim.backend=carla"]).sim.world_changes() == {}


# ------------------------------------------------------------------- options that depend on each other
@pytest.mark.parametrize("overrides, culprit, expected", [
    # CARLA's own options with the embedded simulator: they would be ignored
    (["sim.carla_walkers=5"], "sim.carla_walkers=5",
     "sim.carla_walkers: options of the CARLA backend, but sim.backend is embedded"),
    (["sim.carla_host=10.0.0.7:2000"], "sim.carla_host=10.0.0.7:2000", "sim.carla_host: options of the CARLA backend"),
    (["sim.carla_vehicles=0"], "sim.carla_vehicles=0", "sim.carla_vehicles: options of the CARLA backend"),
    (["sim.carla_timeout_s=3"], "sim.carla_timeout_s=3", "sim.carla_timeout_s: options of the CARLA backend"),
    (["sim.carla_reconnect_s=5"], "sim.carla_reconnect_s=5", "sim.carla_reconnect_s: options of the CARLA backend"),
    # the embedded simulator's options with CARLA: CARLA drives its own traffic
    (["sim.backend=carla", "sim.ego_speed_mps=[2, 12]"], "sim.ego_speed_mps=[2, 12]",
     "sim.ego_speed_mps: options of the embedded simulator; the carla backend drives its own traffic"),
    # a tick CARLA's physics cannot cover
    (["sim.backend=carla", "sim.frame_rate=5"], "sim.frame_rate=5", "sim.frame_rate: the carla backend needs >= 6.25 Hz"),
    # CARLA with nothing to feed: no live mediator, or an in-process run
    (["sim.backend=carla", "exchange.live_mediator=false"], "sim.backend=carla",
     "sim.backend: carla feeds the live mediator pool, but exchange.live_mediator is false"),
    (["sim.backend=carla", "cluster.address=none"], "sim.backend=carla",
     "sim.backend: carla feeds the live mediator pool of distributed runs, but cluster.address is none"),
    # the server's address
    (["sim.backend=carla", "sim.carla_host=carla-0"], "sim.carla_host=carla-0",
     "sim.carla_host: expected HOST:PORT like '127.0.0.1:2000'; found 'carla-0'"),
    (["sim.backend=carla", "sim.carla_host=carla-0:0"], "sim.carla_host=carla-0:0", "sim.carla_host: expected HOST:PORT"),
    (["sim.backend=carla", "sim.carla_host=tcp://h:2000"], "sim.carla_host=tcp://h:2000",
     "sim.carla_host: expected HOST:PORT"),
    (["sim.backend=carla", "sim.carla_walkers=-1"], "sim.carla_walkers=-1", "sim.carla_walkers: must be >= 0 and <= 500"),
    # a live mediator without LiDAR for tasks that read LiDAR
    (["tasks.detection.enabled=true", "sim.lidar_beams=0"], "sim.lidar_beams=0",
     "sim.lidar_beams: 0 renders no LiDAR, but the live mediator pool feeds detection, which read LiDAR sweeps"),
])
def test_options_that_cannot_work_together_are_refused_at_load(overrides: list[str], culprit: str, expected: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections_module, "_carla_importable", lambda: True)
    message = _error(overrides=tuple(overrides))
    assert message.startswith(f"override {culprit!r}: ") and expected in message


def test_carla_settings_that_work_load_and_reach_the_sim_actor_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskology.sim.carla_backend import MIN_FRAME_RATE_HZ, CarlaOptions

    monkeypatch.setattr(sections_module, "_carla_importable", lambda: True)
    assert sections_module.CARLA_MIN_FRAME_RATE_HZ == MIN_FRAME_RATE_HZ
    cfg = load_config(None, ["sim.backend=carla", "sim.carla_host=carla-3.cluster:2010", "sim.carla_walkers=7",
                             "sim.frame_rate=6.25", "sim.carla_reconnect_s=30"])
    assert cfg.sim.carla_options() == CarlaOptions(host="carla-3.cluster:2010", vehicles=30, walkers=7, timeout_s=10.0,
                                                   reconnect_s=30.0)
    assert load_config(None, []).sim.carla_options() is None
    # no SimActor: a LiDAR task without LiDAR in the (absent) live pool is not this check's business
    for extra in ("train.mode=alone", "exchange.live_mediator=false", "cluster.address=none"):
        load_config(None, ["tasks.detection.enabled=true", "sim.lidar_beams=0", extra])
    # alone: no mediator at all, so the backend does not matter (a baseline arm of a CARLA experiment)
    alone = load_config(None, ["sim.backend=carla", "train.mode=alone", "exchange.live_mediator=false"])
    assert alone.sim.backend == "carla"


def test_carla_live_mediator_needs_the_client_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections_module, "_carla_importable", lambda: False)
    message = _error(overrides=("sim.backend=carla",))
    assert message == ("override 'sim.backend=carla': sim.backend: carla needs the 'carla' client package for the live "
                       "mediator, and it is not installed here; pip install 'taskology[carla]' (carla==0.9.16, "
                       "matching the server)")
    load_config(None, ["sim.backend=carla", "train.mode=alone"])        # no SimActor: no client needed
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "carla", None)                       # `import carla` would fail
    assert sections_module._carla_importable() is False


def test_carla_section_in_a_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections_module, "_carla_importable", lambda: True)
    path = _write(tmp_path, "sim:\n  backend: carla\ncluster:\n  address: none\n")
    assert _error(path).startswith(f"{path}: sim.backend: carla feeds the live mediator pool of distributed runs")
