"""Offline replay: every frame of a recording through the node's frame step, outputs into a new bag
(`run.run_replay`, what `casseg-replay BAG` runs), the bag's ground truth scored (`ground_truth`)."""
