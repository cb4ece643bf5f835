"""One placement path: what `rayscale train` reserves is the plan `--dry-run` and `rayscale status` print, and every
actor the trainer starts lands in its role's placement group (no manager reserves its own)."""

from pathlib import Path

import pytest

from rayscale import controller
from rayscale.actors import placement as placement_module
from rayscale.config_loading import load_config
from rayscale.plan import format_plan, plan_placement

CONFIGS = Path(__file__).resolve().parents[1] / "launch" / "configs"


class _Reserved(Exception):
    """Raised by the stand-in for Ray's reservation once the trainer has asked for its plan."""


@pytest.mark.parametrize("config", [None, "1node-8gpu.yaml", "4node-8gpu.yaml", "w2s"])
def test_train_reserves_exactly_the_plan_dry_run_prints(config, tmp_path, monkeypatch, capsys):
    overrides = [f"tracking.run_dir={tmp_path}", "tracking.wandb=false"]
    path = None
    if config == "w2s":  # the weak supervisor's worker is part of the plan too
        overrides += ["algo.strategy=weak_to_strong", "algo.weak_to_strong.weak_model=some-org/weak-model"]
    elif config:
        path = CONFIGS / config
        overrides += ["model.path=some-org/some-model", "data.source=synthetic", "data.path=null"]
    cfg = load_config(path, overrides)

    assert controller.main(cfg, dry_run=True) == 0
    printed = capsys.readouterr().out

    asked = []

    def reserve(plan, timeout_s, check_fit=True, name_prefix="rayscale"):
        asked.append((plan, timeout_s))
        raise _Reserved

    monkeypatch.setattr(placement_module, "create_placement_groups", reserve)
    monkeypatch.setattr(controller.cluster, "start_or_join", lambda cfg, check_storage=True, **kw: None)
    monkeypatch.setattr(controller, "load_tokenizer", lambda *a, **k: None)
    trainer = controller.Trainer(cfg, controller.prepare_run(cfg, build_model=False))
    with pytest.raises(_Reserved):
        trainer.run()

    [(plan, timeout_s)] = asked
    assert timeout_s == cfg.cluster.placement_timeout_s
    assert plan == plan_placement(cfg)  # what `rayscale status` simulates against the nodes
    assert format_plan(plan) in printed
    roles = [rp.role for rp in plan.roles]
    assert ("weak_rollout" in roles) == (config == "w2s")
    assert roles[:2] == ["learner", "rollout"] and roles[-2:] == ["teacher", "verifier"]


@pytest.mark.ray
def test_every_actor_of_the_trainer_is_in_its_roles_placement_group(local_ray, tiny_model_dir, tmp_path):
    import ray

    cfg = load_config(None, [f"tracking.run_dir={tmp_path}", "tracking.wandb=false", f"model.path={tiny_model_dir}",
                             "rollout.num_workers=2", "learner.num_ranks=2", "verifier.num_workers=2",
                             "cluster.rollout.num_cpus=0.5", "cluster.learner.num_cpus=0.5"])
    trainer = controller.Trainer(cfg, controller.prepare_run(cfg))
    trainer.placements = placement_module.place_roles(cfg)
    try:
        trainer.start_support_actors()
        trainer.start_policy_actors(str(tiny_model_dir), None)
        group_of = {p.group.id.hex(): role for role, p in trainer.placements.items()}
        actors = {"rollout": trainer.rollout.workers, "learner": trainer.learner.ranks,
                  "teacher": [trainer.teacher.actor], "verifier": trainer.verifier.actors}
        plan = plan_placement(cfg)
        for role, handles in actors.items():
            where = ray.get([h.location.remote() for h in handles], timeout=120)
            assert [group_of.get(w["placement_group"]) for w in where] == [role] * plan.role(role).count, role
    finally:
        trainer.shutdown()
        placement_module.remove_placement_groups(trainer.placements)
