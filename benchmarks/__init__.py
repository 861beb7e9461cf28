"""Performance harness: ratios against a plain PyTorch forward measured in the same run."""
