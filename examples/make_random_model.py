"""Write a randomly initialised alexnet32 model folder (a stand-in until a trained model ships).

    python examples/make_random_model.py hub/random-alexnet32

Random-init features are the floor a trained model must beat (see benchmarks/RESULTS.md).
"""

import sys

import torch

from metaug_features import EncoderConfig, build_encoder, save_pretrained

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "hub/random-alexnet32"
    torch.manual_seed(0)
    config = EncoderConfig(architecture="alexnet32", width=1.0, provenance={"method": "random-init", "seed": 0})
    save_pretrained(build_encoder(config).eval(), out)
    print(f"wrote {out}")
