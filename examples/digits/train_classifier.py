"""Train the digit scorer on the classifier half of the dataset; write classifier.safetensors.

    python examples/digits/train_classifier.py

It never sees the generator's half, on which its accuracy is reported.
"""

from pathlib import Path

import numpy as np
from sklearn.neural_network import MLPClassifier

from edgegen.core import safetensors_io
from edgegen.digits import DigitClassifier, features, load

OUT = Path(__file__).resolve().parent / "classifier.safetensors"


def main(seed: int = 0):
    data = load(seed)
    xb, yb = data["classifier"]
    xa, ya = data["generator"]
    mlp = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=2000, random_state=seed)
    mlp.fit(features(xb), yb)
    weights = {"w1": mlp.coefs_[0], "b1": mlp.intercepts_[0], "w2": mlp.coefs_[1], "b2": mlp.intercepts_[1]}
    safetensors_io.save({k: v.astype(np.float32) for k, v in weights.items()}, OUT)
    clf = DigitClassifier.load(OUT)
    print(f"wrote {OUT}; accuracy on the generator's half (unseen): {clf.accuracy(xa, ya):.3f}, "
          f"on its own half: {clf.accuracy(xb, yb):.3f}")


if __name__ == "__main__":
    main()
