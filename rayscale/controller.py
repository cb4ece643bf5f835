"""The controller: one loop that drives rollout workers, the teacher, the verifier pool and the learner group.

Read `Trainer.run` top to bottom: it is the whole algorithm.

    stage 1 (optional): SFT the student on gold solutions / teacher thought templates -> starting policy
    for each iteration:
        draw prompts -> roll out n samples each -> verify -> build preference pairs (strategy)
        -> learner DPO update -> weight sync to every rollout worker -> eval every K -> checkpoint every M

Everything that is not orchestration lives elsewhere: stage 1 in `rayscale.stage1`, pair strategies in
`rayscale.algos.pairs`, the actors and their managers in `rayscale.actors` (the teacher's restart in
`TeacherManager`, the weak model in `WeakSupervisor`), the stop request in `rayscale.stop`, exit statuses and fatal
failures in `rayscale.failures`, the banner and pre-flight checks in `rayscale.run_setup` / `rayscale.sanity`,
tracking in `rayscale.tracking`, controller state in `rayscale.checkpointing`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.exceptions import RayActorError

from rayscale import checkpointing, cluster, failures, logs, writing
from rayscale import metric_names as M
from rayscale.actors.learner import LearnerGroup, LearnerGroupError
from rayscale.actors.placement import RolePlacement, place_roles, remove_placement_groups
from rayscale.actors.rollout import RolloutManager
from rayscale.actors.teacher import TeacherManager
from rayscale.actors.verifier import VerifierPool
from rayscale.actors.weak_supervisor import WeakSupervisor
from rayscale.algos import pairs as P
from rayscale.algos import strategies as S
from rayscale.algos.streaming import Streaming
from rayscale.colocation import Turns
from rayscale.config import RayscaleConfig
from rayscale.data import Problem
from rayscale.data.cursor import PromptCursor
from rayscale.evaluation import accuracy_on
from rayscale.models import load_tokenizer
from rayscale.plan import plan_text
from rayscale.prompts import render_prompt
from rayscale.run_setup import RunInputs, prepare_run, print_banner
from rayscale.sanity import check_prompts_fit
from rayscale.seeding import stable_seed
from rayscale.stage1 import stage1_sft
from rayscale.stop import StopRequest
from rayscale.sync import logprob_gap as LG
from rayscale.sync.coordinator import WeightSync
from rayscale.teacher.records import Correction, CorrectionRequest
from rayscale.timing import iteration_times
from rayscale.tracking import Tracker
from rayscale.types import PreferencePair, RolloutRequest, Sample


@dataclass
class Experience:
    """What one iteration learns from, with the cursor state right after its prompts were drawn."""

    iteration: int
    pairs: list[PreferencePair]
    stats: dict[str, Any]
    cursor_state: dict[str, int]
    times: dict[str, float] = field(default_factory=dict)
    sampled: list[Sample] = field(default_factory=list)  # the engine samples the pairs train on (logprob gap)


class StageTimer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


class Trainer:
    def __init__(self, cfg: RayscaleConfig, inputs: RunInputs):
        self.cfg, self.inputs = cfg, inputs
        self.run_dir = inputs.run_dir
        self.ckpt_dir = Path(cfg.checkpoint.dir or self.run_dir / "checkpoints")
        self.tokenizer = load_tokenizer(inputs.model_path, cfg.model.trust_remote_code)
        # weak_to_strong's weak supervisor (its answers file read now; its model started on first use)
        self.weak = WeakSupervisor(cfg.algo.weak_to_strong, lambda path: self.start_rollout(
            path, "weak_rollout", cfg.rollout.model_copy(update={"num_workers": 1})))
        # The one reader of cfg.sync: weight sync, its bucket size (the learner's), the rollout call timeout.
        self.weight_sync = WeightSync(cfg.sync, rollout_gpus=cfg.cluster.rollout.num_gpus,
                                      colocated=cfg.cluster.colocate)
        # cluster.colocate: rollout workers and learner ranks take turns on shared devices (a no-op otherwise)
        self.turns = Turns(cfg.cluster.colocate, cfg.rollout.vllm.sleep_level)
        # What a run holds once started; None until then, and again after `shutdown`.
        self.placements: dict[str, RolePlacement] = {}  # every role's placement group, reserved once per run
        self.tracker: Tracker | None = None
        self.verifier: VerifierPool | None = None
        self.teacher: TeacherManager | None = None
        self.rollout: RolloutManager | None = None
        self.learner: LearnerGroup | None = None
        self.policy_path = inputs.model_path  # the policy the rollout workers and learner start from
        self.cursor: PromptCursor | None = None
        self.version = 0  # the policy version the rollout workers hold
        self.run_id = uuid.uuid4().hex[:12]  # a resumed run takes its checkpoint's: keep_last prunes only its own

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Train; a learner-group failure restarts everything from the last checkpoint (`checkpoint.max_restarts`).

        Every role is placed once, from the plan `rayscale status` and `--dry-run` print; actors (also restarted
        ones, and stage 1's) go into their role's placement groups, which outlive restarts and go at the end."""
        cluster.start_or_join(self.cfg, runtime_env=logs.runtime_env(self.run_dir, self.cfg.tracking.verbose))
        self.placements = place_roles(self.cfg)
        resume = self.cfg.checkpoint.resume
        try:
            for restart in itertools.count(1):
                try:
                    return self.run_from(checkpointing.find_resume_state(resume, self.ckpt_dir))
                except LearnerGroupError as e:
                    if restart > self.cfg.checkpoint.max_restarts:
                        raise failures.learner_failure(e, self.cfg.checkpoint.max_restarts) from e
                    print(f"learner group failed ({e}); restarting from the last checkpoint "
                          f"(restart {restart} of {self.cfg.checkpoint.max_restarts})", flush=True)
                    self.tracker.finish()
                    self.shutdown()
                    resume = "auto"  # whatever was asked first, continue from what this run saved
            raise AssertionError("unreachable")
        finally:
            self.shutdown()
            remove_placement_groups(self.placements)
            self.placements = {}

    def run_from(self, state: checkpointing.ControllerState | None) -> int:
        cfg = self.cfg
        self.tracker = Tracker(cfg, self.run_dir, resume=state is not None)
        if state is not None:
            self.run_id = state.run_id  # the same run, continued
            self.tracker.truncate_after(state.iteration)
            print(f"resuming from {state.path} (iteration {state.iteration}, policy v{state.policy_version})")

        started = time.perf_counter()
        self.start_support_actors()
        print(f"verifier pool and teacher up ({time.perf_counter() - started:.1f}s)", flush=True)
        policy_path = stage1_sft(self) if state is None else state.start_model
        started = time.perf_counter()
        self.start_policy_actors(policy_path, state)
        print(f"rollout workers and learner group up ({time.perf_counter() - started:.1f}s)", flush=True)
        self.cursor = self._cursor(state)
        self.version = state.policy_version if state else 0
        if state is not None:
            self.sync_weights()  # workers start from the resumed policy
        self.turns.start(self.learner)  # colocated: the engines go first
        if state is None and cfg.algo.eval_every and cfg.algo.eval_at_start:
            self.tracker.log({M.ITERATION: 0, M.POLICY_VERSION: 0, **self.evaluate(0)})
            print(self.tracker.console_line(self.tracker.rows[-1]), flush=True)

        first, last = (state.iteration if state else 0) + 1, cfg.algo.iterations
        done, cursor_done = first - 1, self.cursor.state_dict()  # the last finished iteration and its cursor
        stop = StopRequest.install()
        next_exp: Experience | None = None
        with ThreadPoolExecutor(max_workers=1) as background:
            for it in range(first, last + 1):
                iteration_started, collected_ahead = time.perf_counter(), next_exp is not None
                exp = next_exp or self.collect(it)
                if stop.requested:  # nothing of iteration `it` has touched the policy yet
                    break
                timer = StageTimer()
                # Async: iteration it+1's rollouts run on the current weights while the learner trains on `exp`
                # (one step off-policy); sync mode collects at the top of each iteration instead.
                ahead = background.submit(self.collect, it + 1) if cfg.algo.async_rollout and it < last else None
                staleness = self.version - exp.stats[M.ROLLOUT_POLICY_VERSION]  # 0 in sync mode, <= 1 async
                if self.turns.enabled:
                    with timer(M.STAGE_HAND_OVER):  # colocated: the engines sleep, the learner takes the devices
                        self.turns.to_learner(self.rollout, self.learner)
                with timer(M.STAGE_TRAIN):
                    learn = self.train(exp)
                if cfg.algo.ref_update_every and it % cfg.algo.ref_update_every == 0:
                    with timer(M.STAGE_REF_UPDATE):  # the next iteration's DPO is anchored at this policy
                        self.learner.set_reference_from_policy()
                with timer(M.STAGE_WAIT_ROLLOUT):
                    next_exp = ahead.result() if ahead else None
                with timer(M.STAGE_SYNC):  # colocated: the learner offloads around it, the engines wake
                    if learn:
                        self.version += 1
                    self.turns.to_rollout(self.rollout, self.learner, self._sync_after(bool(learn)),
                                          generates=self.weight_sync.verify)
                row = self.iteration_row(exp, learn)
                if self.turns.enabled:
                    row[M.COLOCATE] = self.turns.last
                self.tracker.log_pairs(it, exp.pairs)
                row[M.STALENESS] = staleness
                if cfg.algo.eval_every and (it % cfg.algo.eval_every == 0 or it == last):
                    with timer(M.STAGE_EVAL):
                        row.update(self.evaluate(it))
                row[M.ITERATION_S] = time.perf_counter() - iteration_started  # the wall time, every stage in it
                row[M.TIME] = iteration_times(exp.times, timer.times, row[M.ITERATION_S], collected_ahead)
                self.tracker.log(row)
                print(self.tracker.console_line(row), flush=True)
                failures.check_teacher_failures(it, exp.stats, cfg.teacher)  # after its row: counts on record
                done, cursor_done = it, exp.cursor_state
                if cfg.checkpoint.every and it % cfg.checkpoint.every == 0:
                    self.save(done, cursor_done)
                if stop.requested or self.finished_early(row):
                    break
        just_saved = done >= first and cfg.checkpoint.every and done % cfg.checkpoint.every == 0
        if stop.requested or (done >= first and not just_saved):
            self.save(done, cursor_done)  # the final state, unless the loop just saved it
        plots = self.tracker.finish()
        if stop.requested:
            status = failures.STOPPED[stop.requested]
            print(f"stopped by {stop.requested} after iteration {done}: checkpoint written to "
                  f"{checkpointing.checkpoint_path(self.ckpt_dir, done)}; rerun with checkpoint.resume=auto "
                  f"to continue (exit status {status})", flush=True)
            self.shutdown()
            return status
        else:
            self.turns.to_learner(self.rollout, self.learner)  # colocated: the export needs the whole learner
            self.learner.export_hf(self.run_dir / "final_model")
            print(f"done: final policy v{self.version} in {self.run_dir / 'final_model'}; "
                  f"metrics in {self.tracker.metrics_path}; plots: {', '.join(str(p) for p in plots)}", flush=True)
        self.shutdown()
        return 0

    def finished_early(self, row: dict[str, Any]) -> bool:
        """Asked after each iteration's row is logged: True ends the run there as a finished one (final checkpoint
        and export). Never, here; a subclass may stop on its own budget (benchmarks/time_to_accuracy.py: wall
        clock)."""
        return False

    def correct(self, wrong: list[tuple[Problem, P.Graded]]) -> list[Correction]:
        """The teacher's corrections of wrong samples, in order (rejected ones carry their reason)."""
        style = self.cfg.data.prompt_style
        return self.teacher.correct([CorrectionRequest(p, g.sample.response, p.id, style) for p, g in wrong])

    # ------------------------------------------------------------------------------------------------ actors
    def start_support_actors(self) -> None:
        """The verifier pool and the teacher: stage 1 may already need them."""
        self.verifier = VerifierPool.from_config(self.cfg.verifier, self.placements["verifier"])
        self.teacher = TeacherManager(self.cfg.teacher, self.placements["teacher"])
        self.teacher.probe()  # from where the requests will go: an `openai` endpoint that does not answer: exit 2

    def start_rollout(self, model_path: str, role: str, rollout_cfg, colocated: bool = False) -> RolloutManager:
        """Rollout workers of `role` ("rollout", or "weak_rollout" for weak-to-strong's weak model); `colocated`:
        the policy's workers, in the learner ranks' bundles under cluster.colocate."""
        return RolloutManager(model_path, rollout_cfg, placement=self.placements[role],
                              call_timeout_s=self.weight_sync.timeout_s,
                              trust_remote_code=self.cfg.model.trust_remote_code,
                              weight_transfer=self.weight_sync.vllm_weight_transfer, colocated=colocated)

    def start_policy_actors(self, policy_path: str, state) -> None:
        """Rollout workers and the learner group, both built from the starting policy."""
        cfg = self.cfg
        self.policy_path = policy_path
        self.rollout = self.start_rollout(policy_path, "rollout", cfg.rollout, colocated=cfg.cluster.colocate)
        self.learner = LearnerGroup(policy_path, cfg.learner, cfg.algo, cfg.cluster.learner,
                                    ref_model_path=cfg.model.ref_path or policy_path,
                                    placement=self.placements["learner"], failure_grace_s=cfg.learner.failure_grace_s,
                                    bucket_bytes=self.weight_sync.bucket_bytes,
                                    trust_remote_code=cfg.model.trust_remote_code)
        if state is not None:
            self.learner.load_checkpoint(state.learner_dir)

    def _sync_after(self, learned: bool):
        """What the hand-over back to the engines pushes: the new weights when the learner stepped, and also
        when the engines' sleep freed theirs (rollout.vllm.sleep_level 2); nothing otherwise."""
        return self.sync_weights if learned or self.turns.sync_after_wake else lambda: None

    def sync_weights(self) -> None:
        """The learner's weights to every rollout worker as `self.version`, pushed by the run's weight-sync
        coordinator (rayscale.sync.coordinator.WeightSync: transport, group, retries, catch-up, output check). A
        learner rank lost during the sync fails the learner group (the run restarts from its last checkpoint), as
        a rank lost in a step does."""
        try:
            self.weight_sync.push(self.learner.ranks, self.rollout, self.version)
        except RayActorError as e:
            if e.actor_id in {r._actor_id.hex() for r in self.learner.ranks}:
                raise LearnerGroupError(f"a learner rank died during weight sync {self.version}") from e
            raise

    def shutdown(self) -> None:
        """Stop every actor this trainer started (any that exist: also after a partial start or a failure); the
        placement groups stay for a restart."""
        self.weight_sync.close()  # first: the sync group's members are still alive
        self.weak.shutdown()  # started on first use: stopped here, started again on next use
        for manager in (self.rollout, self.learner, self.verifier, self.teacher):
            if manager is not None:
                manager.shutdown()
        self.rollout = self.learner = self.verifier = self.teacher = None

    # ------------------------------------------------------------------------------------------------ experience
    def prompt(self, p: Problem) -> str:
        return render_prompt(self.tokenizer, p.question, self.cfg.data.prompt_style, self.cfg.data.use_chat_template)

    def collect(self, it: int) -> Experience:
        """Draw prompts, roll out, verify, build pairs: everything an iteration learns from."""
        algo, timer = self.cfg.algo, StageTimer()
        batch = [self.inputs.train[i] for i in self.cursor.next_batch(algo.prompts_per_iteration)]
        cursor_state = self.cursor.state_dict()
        rng = random.Random(stable_seed(algo.seed, it, 2))
        strategies = P.assign_strategies([p.id for p in batch], algo.strategy, rng)
        ctx = self.strategy_context(it)
        stream = self.streaming(batch, strategies, ctx)  # None unless algo.stream_stages
        try:
            with timer(M.STAGE_ROLLOUT):
                requests = [RolloutRequest(p.id, self.prompt(p), n=algo.samples_per_prompt,
                                           seed=stable_seed(algo.seed, it, j),
                                           logprobs=True)  # the engine's own, for the logprob gap
                            for j, p in enumerate(batch)]
                samples = self.rollout.generate(requests, on_chunk=stream.chunk_done if stream else None)
            with timer(M.STAGE_VERIFY):  # streaming: what is left to grade once the last chunk is back
                graded = stream.graded() if stream else self.grade(batch, samples)
            if stream:
                ctx = dataclasses.replace(ctx, correct=stream.correct)  # what the teacher stage already has
            stats: dict[str, Any] = {M.ACCURACY: _mean([g.correct for gs in graded for g in gs]),
                                     M.PROMPTS_DIGEST: _digest(p.id for p in batch),
                                     M.ROLLOUT_POLICY_VERSION: min(x.policy_version for s in samples for x in s),
                                     M.SAMPLES: sum(len(s) for s in samples),
                                     M.TOKENS: sum(len(x.token_ids) for s in samples for x in s)}
            by_strategy: dict[str, list[tuple[Problem, list[P.Graded]]]] = {}
            for p, gs in zip(batch, graded):
                by_strategy.setdefault(strategies[p.id], []).append((p, gs))
            pairs: list[PreferencePair] = []
            for name, group in by_strategy.items():
                with timer(name):  # streaming: what is left of the teacher's work, in `correction`'s
                    built = S.build_pairs(name, ctx, group, rng, it, stats)
                pairs.extend(built)
                stats[M.PAIRS_PREFIX + name] = len(built)
        finally:
            if stream:
                stream.close()
        if stream:
            stats.update({M.STREAM_BUSY_PREFIX + name: s for name, s in stream.busy_s().items()})
        stats[M.PAIRS] = len(pairs)
        sampled = LG.trained_samples(pairs, samples, stats[M.ROLLOUT_POLICY_VERSION])
        return Experience(it, pairs, stats, cursor_state, timer.times, sampled)

    def streaming(self, batch: list[Problem], strategies: dict[str, str], ctx: S.StrategyContext) -> Streaming | None:
        """`algo.stream_stages`: the verify and teacher stages that run beside the rollout (rayscale.algos.streaming)."""
        if not self.cfg.algo.stream_stages:
            return None
        return Streaming(batch, self.verifier.verify, self.correct,
                         lambda p, gs: S.teacher_items(strategies[p.id], ctx, p, gs))

    def grade(self, batch: list[Problem], samples) -> list[list[P.Graded]]:
        items = [(p.gold_answer, s.response) for p, ss in zip(batch, samples) for s in ss]
        results = iter(self.verifier.verify(items))
        graded = []
        for ss in samples:
            rows = [(s, next(results)) for s in ss]
            graded.append([P.Graded(s, bool(r.correct), r.pred) for s, r in rows])
        return graded

    def strategy_context(self, it: int) -> S.StrategyContext:
        """What the pair builders (rayscale.algos.strategies) see of this trainer; built per iteration, so a
        replaced actor is picked up. Streaming stages draw per prompt (`prompt_rng`): what a builder picks for a
        prompt must not depend on when its samples came back."""
        algo = self.cfg.algo
        prompt_rng = (lambda p: random.Random(f"{algo.seed}:{it}:{p.id}")) if algo.stream_stages else None
        return S.StrategyContext(algo=algo, generate=self.rollout.generate, verify=self.verifier.verify,
                                 correct=self.correct, weak_answers=self.weak_answers, seed=stable_seed,
                                 prompt_rng=prompt_rng)

    def weak_answers(self, problems: list[Problem]) -> dict[str, str]:
        return self.weak.answers(problems, self.prompt)

    # ------------------------------------------------------------------------------------------------ learn
    def train(self, exp: Experience) -> dict[str, Any] | None:
        exp.stats.update(self.logprob_gap(exp))  # before the step: the learner still holds the samples' weights
        ranks = self.cfg.learner.num_ranks
        pairs = exp.pairs[: len(exp.pairs) - len(exp.pairs) % ranks]  # equal shards per rank
        if not pairs:
            return None
        metrics: dict[str, Any] = {}
        for _ in range(self.cfg.algo.updates_per_iteration):
            metrics = self.learner.train_dpo(pairs)
        return metrics

    def logprob_gap(self, exp: Experience) -> dict[str, float | None]:
        """The engines' log-probabilities of the tokens they sampled (of the pairs this step trains on) against
        the learner's on the same weights (rayscale.sync.logprob_gap); the coordinator stops or warns on a gap
        above sync.max_logprob_gap. None where the samples are of another version (async mode's, one behind)."""
        if not exp.sampled or exp.stats[M.ROLLOUT_POLICY_VERSION] != self.version:
            return dict.fromkeys(LG.GAP_KEYS)
        learner = self.learner.score_tokens([(s.prompt, s.prefix) for s in exp.sampled],
                                            [s.token_ids for s in exp.sampled])
        gaps = LG.gap([s.logprobs for s in exp.sampled], learner)
        self.weight_sync.check_logprob_gap(gaps, self.version)
        return gaps

    def iteration_row(self, exp: Experience, learn: dict[str, Any] | None) -> dict[str, Any]:
        row: dict[str, Any] = {M.ITERATION: exp.iteration, M.POLICY_VERSION: self.version, **exp.stats}
        for k, v in (learn or {}).items():
            row[M.LEARNER_PREFIX + k] = v
        row[M.TOKENS_PER_S] = exp.stats[M.TOKENS] / max(exp.times.get(M.STAGE_ROLLOUT, 0.0), 1e-9)
        if learn:  # this iteration synced: the bytes it sent (rayscale bench's GB/s)
            row[M.SYNC_BYTES] = self.weight_sync.last_report.get("bytes")
            row[M.SYNC_TRANSPORT] = self.weight_sync.last_report.get("transport")
        return row

    # ------------------------------------------------------------------------------------------------ eval
    def evaluate(self, iteration: int) -> dict[str, float]:
        """Held-out accuracy: greedy (T=0) and sampled (rollout temperature, `algo.eval_samples` per problem)."""
        held_out = self.inputs.eval
        prompts = [self.prompt(p) for p in held_out]
        out, samples = {}, []
        for name, temperature in (("greedy", 0.0), ("sampled", self.cfg.rollout.temperature)):
            out[M.eval_acc(name)], rows = accuracy_on(self.rollout, self.verifier, held_out, prompts, temperature,
                                                        samples_per_problem=self.cfg.algo.eval_samples)
            samples += [{"mode": name, "policy_version": self.version, **r} for r in rows]
        self.tracker.log_samples(iteration, samples)
        return out

    # ------------------------------------------------------------------------------------------------ checkpoint
    def _cursor(self, state) -> PromptCursor:
        if state is None:
            return PromptCursor(len(self.inputs.train), self.cfg.algo.seed)
        return PromptCursor.from_state(len(self.inputs.train), self.cfg.algo.seed, state.cursor)

    def save(self, it: int, cursor_state: dict[str, int]) -> None:
        """The learner's checkpoint, then the manifest and controller.json (last: what makes it complete). A
        failed save is removed; a full disk or an unwritable path ends the run naming it (exit 3)."""
        path = checkpointing.checkpoint_path(self.ckpt_dir, it)
        shutil.rmtree(path, ignore_errors=True)  # a save of this iteration from before a resume to an older one
        try:
            with self.turns.learner_holds(self.rollout, self.learner, self.sync_weights, self.weight_sync.verify):
                self.learner.save_checkpoint(path / "learner")
            checkpointing.write_state(path, checkpointing.new_state(
                it, self.version, cursor_state, self.policy_path, path, self.run_id), run_dir=self.run_dir)
        except Exception as e:
            shutil.rmtree(path, ignore_errors=True)  # never left half-written
            failure = writing.write_failure(f"checkpoint of iteration {it}", path, e)
            if failure is None:
                raise
            raise failure from None
        checkpointing.prune(self.ckpt_dir, self.cfg.checkpoint.keep_last, self.run_id)


def _digest(ids) -> str:
    """A short fingerprint of the prompts an iteration drew, so runs and resumes can be compared row by row."""
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(map(float, xs)) / len(xs) if xs else 0.0


def main(cfg: RayscaleConfig, dry_run: bool = False) -> int:
    inputs = prepare_run(cfg, build_model=not dry_run)
    print_banner(cfg, inputs)
    if Path(inputs.model_path, "config.json").is_file():  # a dry run builds no tiny model: nothing to check then
        check_prompts_fit(cfg, load_tokenizer(inputs.model_path, cfg.model.trust_remote_code), inputs.train)
    if dry_run:
        print(plan_text(cfg))
        print("dry run: configuration valid, nothing started")
        return 0
    return Trainer(cfg, inputs).run()
