"""Weight sync from the learner to every rollout worker, driven from the controller: the transports (one class
each, rayscale.sync.transports), the coordinator (WeightSync), the learner's sending mixin and the output check.
The Ray-free wire they use is rayscale.wire. See docs/rollout_and_sync.md."""
