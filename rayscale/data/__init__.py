"""Data layer: one `Problem` record; loaders for GSM8K, MATH/MATH500, generic JSONL and the synthetic task."""

from rayscale.data.loaders import DataError, load_problems, shared_data_dir, to_hf_dataset
from rayscale.data.problem import Problem
from rayscale.data.synthetic import synthetic_splits

__all__ = ["DataError", "Problem", "load_problems", "shared_data_dir", "synthetic_splits", "to_hf_dataset"]
