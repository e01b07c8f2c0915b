"""Training learns: a short real run of the real command reaches the accuracy a known method gets.

The known answer is scikit-learn's multinomial logistic regression fitted on the same training images
and scored on the same test images as the run (DigitsDataModule's own split): a linear classifier
trained by SGD for 10 epochs must come within 3 points of it, and far above chance (10%).
"""

from __future__ import annotations

import json

import pytest
from tests.conftest import run_cli, run_folders


@pytest.fixture(scope="module")
def reference_accuracy() -> float:
    from sklearn.linear_model import LogisticRegression

    from data.digits import DigitsDataModule

    reader = DigitsDataModule.__new__(DigitsDataModule)  # load_split needs no settings
    (train_x, train_y), (test_x, test_y) = (reader.load_split(train) for train in (True, False))
    model = LogisticRegression(max_iter=5000).fit(train_x.flatten(1).float().numpy() / 255, train_y.numpy())
    return 100.0 * model.score(test_x.flatten(1).float().numpy() / 255, test_y.numpy())


def test_a_linear_classifier_on_digits_reaches_logistic_regressions_accuracy(tmp_path, reference_accuracy):
    assert reference_accuracy > 90  # the known answer itself (about 96%)
    run_cli("experiments.train", "model=linear", "data=digits", "trainer.max_epochs=10", "quiet=true",
            "callbacks=default", cwd=tmp_path, check=True)
    (run,) = run_folders(tmp_path / "outputs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 10
    assert summary["test_acc"] >= reference_accuracy - 3.0, (summary["test_acc"], reference_accuracy)
