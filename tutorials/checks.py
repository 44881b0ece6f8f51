"""Checks for the lessons' exercises: ``check_<lesson>_<exercise>(answer, ...)``.

Each check works the expected answer out from the package itself (no stored result), prints
"exercise N.K: correct" when the answer matches and raises an AssertionError with a hint when
it does not. Use them from a cell or a script in ``tutorials/``:

    import checks
    checks.check_01_1(("fear", "surprise"), 5)

The worked solutions in ``tutorials/solutions/`` call these checks on their own answers.
Where a lesson's data is involved, a check reads the same preset as the lessons
(``_common.PRESET``: ``default``, or ``tiny`` under MMARNN_QUICK=1).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import _common
import numpy as np
import torch
import torch.nn.functional as F

from mmarnn_min import affect, faces
from mmarnn_min.config import preset

AFFECT_NAMES = list(affect.AFFECT_NAMES)        # z's 26 values
POINT_NAMES = list(faces.LANDMARK_NAMES)        # the 5 landmarks, in order


def _require(exercise: str, ok: bool, hint: str) -> None:
    assert ok, f"exercise {exercise}: not yet. {hint}"


def _verdict(exercise: str, ok: bool, hint: str) -> None:
    _require(exercise, ok, hint)
    print(f"exercise {exercise}: correct")


def _close(value: float, expected: float, tolerance: float) -> bool:
    return value is not None and math.isfinite(float(value)) and abs(float(value) - expected) <= tolerance


# ---- lesson 1: affect descriptors -----------------------------------------------------------

def check_01_1(pair: Iterable[str], shared: int) -> None:
    """The two (different) expressions whose Du rows share the most AUs, and how many."""
    relation = affect.au_relation_matrix()
    overlap = (relation @ relation.T).numpy()                     # (7, 7) AUs shared
    np.fill_diagonal(overlap, -1)
    most = overlap.max()
    best = {frozenset((affect.EXPRESSIONS[i], affect.EXPRESSIONS[j])) for i, j in zip(*np.nonzero(overlap == most))}
    _verdict("1.1", frozenset(pair) in best and int(shared) == int(most),
             "Take relation @ relation.T, ignore its diagonal (an expression shares all its AUs with "
             "itself) and find the largest entry; name both expressions of that entry.")


def _nearest_centroid_confusion(per_expression: int = 1000, seed: int = 2024) -> np.ndarray:
    """(7, 7) rates: row = true expression, column = the nearest VA centroid (centroids = mean
    VA of per_expression samples; rates over as many fresh samples)."""
    from mmarnn_min.data.synth_labels import sample_image_affect

    rng = np.random.default_rng(seed)
    classes = range(affect.NUM_EXPRESSIONS)
    centroids = np.array([np.mean([sample_image_affect(rng, e)[1] for _ in range(per_expression)], axis=0)
                          for e in classes])                                       # (7, 2)
    confusion = np.zeros((affect.NUM_EXPRESSIONS, affect.NUM_EXPRESSIONS))
    for e in classes:
        va = np.array([sample_image_affect(rng, e)[1] for _ in range(per_expression)])   # (n, 2)
        nearest = np.argmin(((va[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
        confusion[e] = np.bincount(nearest, minlength=affect.NUM_EXPRESSIONS) / per_expression
    return confusion


def check_01_2(accuracy: float, worst: str, mistaken_for: str) -> None:
    """Nearest-centroid classification on VA alone: the mean accuracy over the 7 expressions
    (within 0.04, a sampling error), the expression recognised worst, and the expression its
    samples are most often given instead."""
    confusion = _nearest_centroid_confusion()
    expected_accuracy = float(np.diag(confusion).mean())
    worst_index = int(np.argmin(np.diag(confusion)))
    row = confusion[worst_index].copy()
    row[worst_index] = -1
    _require("1.2", _close(accuracy, expected_accuracy, 0.04), "The accuracy is the mean over the 7 expressions "
             "of the fraction of fresh samples whose nearest centroid is their own; use a few hundred samples "
             "per expression so the estimate is steady.")
    _verdict("1.2", worst == affect.EXPRESSIONS[worst_index] and mistaken_for == affect.EXPRESSIONS[int(np.argmax(row))],
             "Build the 7 x 7 confusion table (true expression -> nearest centroid): the worst expression has the "
             "smallest diagonal entry, and it is mistaken for the largest entry off the diagonal of its row.")


def check_01_3(aus: Iterable[int]) -> None:
    """The AUs of "happily surprised", as the union of two Du rows."""
    relation = affect.au_relation_matrix()
    row = relation[affect.EXPRESSIONS.index("happiness")] + relation[affect.EXPRESSIONS.index("surprise")]
    expected = {au for au, value in zip(affect.AUS, row.tolist()) if value > 0}
    answer = {int(au) for au in aus}
    _verdict("1.3", answer == expected, f"You gave {len(answer)} AUs. Take every AU that is prototypical *or* "
             "observational for happiness or for surprise (affect.DU_TABLE), each once.")


# ---- lesson 2: faces ------------------------------------------------------------------------

def _template_distances(landmarks: np.ndarray, points: np.ndarray, size: int = 112) -> np.ndarray:
    """(5,) distances from the template of ``landmarks`` mapped by the alignment fitted to
    ``points`` (both (5, 2) pixels of the same frame)."""
    matrix = faces.alignment_matrix(points, size)
    return np.linalg.norm(landmarks @ matrix[:, :2].T + matrix[:, 2] - faces.align_template(size), axis=1)


def check_02_1(mean_distance: float, video_path: str | Path) -> None:
    """Haar alignment: the mean distance (112 x 112 crop pixels, over the frames where Haar
    finds a face and the 5 points) of the true landmarks from the template."""
    from mmarnn_min import detectors
    from mmarnn_min.video import read_video

    video_path = Path(video_path)
    video, landmarks = read_video(video_path), np.load(video_path.with_suffix(".landmarks.npy"))
    haar, distances = detectors.HaarDetector(), []
    for t in range(video.num_frames):
        face = detectors.primary_face(haar, video.frames[t])
        if face is not None:
            distances.append(_template_distances(landmarks[t], face.landmarks))
    assert distances, f"Haar finds no face in {video_path}: try the lesson's first video, paths[0]"
    expected = float(np.mean(distances))
    _verdict("2.1", _close(mean_distance, expected, 0.02 * expected),
             "Per frame: fit the alignment to Haar's 5 points (faces.alignment_matrix(face.landmarks, 112)), map "
             "the *true* landmarks through it and measure each one's distance to its template point; average over "
             "the frames where Haar found a face and over the 5 points.")


def check_02_2(scale: float, mean_residual: float) -> None:
    """The similarity fitted from the mirrored template onto the template: its scale, and the
    mean distance of the 5 mapped points from their targets."""
    from mmarnn_min import faces

    template = faces.align_template(112)
    mirrored = template * [-1, 1] + [112, 0]                                      # x -> 112 - x
    matrix = faces.similarity_transform(mirrored, template)
    expected_scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    expected_residual = float(np.linalg.norm(mirrored @ matrix[:, :2].T + matrix[:, 2] - template, axis=1).mean())
    _verdict("2.2", _close(scale, expected_scale, 1e-3 * expected_scale)
             and _close(mean_residual, expected_residual, 1e-3 * expected_residual),
             "similarity_transform(mirrored, template) returns [[a, -b, tx], [b, a, ty]]: the scale is "
             "hypot(a, b); the residual is the mean over the 5 points of |mapped point - template point|.")


def check_02_3(point: str, video_paths: Iterable[str | Path]) -> None:
    """The landmark that lands farthest from its template point on average, with each frame
    aligned by its true landmarks, over the given videos."""
    distances = []
    for path in video_paths:
        for frame_points in np.load(Path(path).with_suffix(".landmarks.npy")):
            distances.append(_template_distances(frame_points, frame_points))
    expected = POINT_NAMES[int(np.argmax(np.mean(distances, axis=0)))]
    _verdict("2.3", point == expected, f"Answer with one of {POINT_NAMES}: average the lesson's `errors` "
             "(frames x 5) over the frames and take the largest.")


# ---- lesson 3: MMA's loss -------------------------------------------------------------------

def check_03_1(l_va: float, l_expr: float, l_au: float, l_dm: float) -> None:
    """The four terms of mma_loss when the network knows nothing: VA constant at 0, all
    expression logits equal, all AU logits 0."""
    from mmarnn_min.losses import mma_loss

    n = 8
    labels = (torch.linspace(-0.8, 0.8, 2 * n).reshape(n, 2), torch.arange(n) % affect.NUM_EXPRESSIONS,
              (torch.arange(n * affect.NUM_AUS).reshape(n, affect.NUM_AUS) % 3 == 0).float())
    outputs = (torch.zeros(n, 2), torch.zeros(n, affect.NUM_EXPRESSIONS), torch.zeros(n, affect.NUM_AUS))
    _, parts = mma_loss(outputs, labels, affect.au_relation_matrix())
    answers = {"va": l_va, "expr": l_expr, "au": l_au, "dm": l_dm}
    wrong = [name for name, value in answers.items() if not _close(value, parts[name], 1e-4)]
    _verdict("3.1", not wrong, f"Look again at L_{', L_'.join(w.upper() for w in wrong)}. A constant prediction "
             "has CCC 0; a uniform softmax gives every class probability 1/7; sigmoid(0) = 1/2, and the BCE of "
             "1/2 does not depend on the target.")


def check_03_2(max_gradient: float, head_that_learns: str) -> None:
    """L_DM with the soft targets detached: the largest gradient on the expression logits of
    images without an expression label, and which head ("expression" or "au") L_DM still trains."""
    torch.manual_seed(0)
    expression_logits = torch.randn(16, affect.NUM_EXPRESSIONS, requires_grad=True)
    au_logits = torch.randn(16, affect.NUM_AUS, requires_grad=True)
    soft_targets = (expression_logits.softmax(dim=1) @ affect.au_relation_matrix()).detach()
    loss = F.binary_cross_entropy_with_logits(au_logits, soft_targets)
    grad_expression, grad_au = torch.autograd.grad(loss, (expression_logits, au_logits), allow_unused=True)
    expected = 0.0 if grad_expression is None else float(grad_expression.abs().max())
    trains = "au" if grad_au is not None and float(grad_au.abs().max()) > 0 else "expression"
    _verdict("3.2", _close(max_gradient, expected, 1e-12) and head_that_learns == trains,
             "With q detached, the only path from L_DM back to the expression logits is cut; which logits does "
             "BCE(sigmoid(u), q) still depend on? (head: 'expression' or 'au')")


def check_03_3(expression: str) -> None:
    """Uniform expression logits, AU probabilities 0.95 for AU12 and AU25 and 0.05 for every
    other AU: the expression whose logit L_DM's gradient descent raises the most."""
    logits = torch.zeros(1, affect.NUM_EXPRESSIONS, requires_grad=True)
    probabilities = torch.full((1, affect.NUM_AUS), 0.05)
    probabilities[0, [affect.AUS.index(12), affect.AUS.index(25)]] = 0.95
    soft_targets = logits.softmax(dim=1) @ affect.au_relation_matrix()
    F.binary_cross_entropy_with_logits(torch.logit(probabilities), soft_targets).backward()
    expected = affect.EXPRESSIONS[int(torch.argmin(logits.grad))]              # descent raises the most negative
    _verdict("3.3", expression == expected, "Compute L_DM for these outputs with the expression logits requiring "
             "a gradient; gradient descent moves each logit by -gradient, so look for the most negative entry.")


# ---- lesson 4: the GRU ----------------------------------------------------------------------

def check_04_1(videos: Iterable[int]) -> None:
    """The videos b (of the lesson's 4) whose h_n differs from their output at frame L_b - 1."""
    from mmarnn_min.data.synth_make import video_plan

    lengths = [video_plan(preset(_common.PRESET).data, "val", index)[0].length for index in range(4)]
    expected = {b for b, length in enumerate(lengths) if length < max(lengths)}
    _verdict("4.1", {int(b) for b in videos} == expected, "h_n is the state after the last of the T padded "
             "steps. For which videos are there steps after their own last frame?")


def check_04_3(lstm_layer: Callable[..., torch.Tensor]) -> None:
    """``lstm_layer(x (B, T, I), h0 (B, H), c0 (B, H), weight_ih (4H, I), weight_hh (4H, H),
    bias_ih (4H,), bias_hh (4H,)) -> outputs (B, T, H)``, against torch.nn.LSTM in float64."""
    torch.manual_seed(0)
    batch, frames, inputs, hidden = 3, 7, 5, 4
    reference = torch.nn.LSTM(inputs, hidden, batch_first=True).double()
    x = torch.randn(batch, frames, inputs, dtype=torch.float64)
    h0, c0 = torch.randn(batch, hidden, dtype=torch.float64), torch.randn(batch, hidden, dtype=torch.float64)
    with torch.no_grad():
        expected, _ = reference(x, (h0[None], c0[None]))
        got = lstm_layer(x, h0, c0, reference.weight_ih_l0, reference.weight_hh_l0, reference.bias_ih_l0,
                         reference.bias_hh_l0)
    ok = tuple(got.shape) == tuple(expected.shape) and float((got - expected).abs().max()) < 1e-10
    _verdict("4.3", ok, "torch stacks the gates in the order i, f, g, o: i, f, o use sigmoid, g uses tanh; "
             "c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t), and return every h_t, shape (B, T, H).")


# ---- lesson 5: masked routing ---------------------------------------------------------------

def check_05_1(fixed: int, lost_from_start: float, lost_centre: float) -> None:
    """Crops to ``fixed`` frames of the lesson's validation videos at least that long: the mean
    fraction of the reaction window lost by a crop from the start, and by the centre crop of
    ``mmarnn_min.mrnn_variants.fixed_length``."""
    from mmarnn_min.data.synth_make import video_plan
    from mmarnn_min.mrnn_variants import fixed_length

    data = preset(_common.PRESET).data
    plans = [video_plan(data, "val", index)[0] for index in range(data.eval_videos)]
    start_lost, centre_lost = [], []
    for plan in plans:
        if plan.length < fixed:
            continue
        window = np.flatnonzero(plan.in_window)
        frames = torch.arange(plan.length, dtype=torch.float64).reshape(1, -1, 1)   # frame t holds the value t
        kept = fixed_length(frames, torch.tensor([plan.length]), fixed, "crop_repeat")[0].flatten().long().numpy()
        start_lost.append(np.mean(window >= fixed))
        centre_lost.append(np.mean(~np.isin(window, kept)))
    assert start_lost, f"no validation video of the preset has {fixed} frames or more: use the lesson's `fixed`"
    _verdict("5.1", _close(lost_from_start, float(np.mean(start_lost)), 1e-6)
             and _close(lost_centre, float(np.mean(centre_lost)), 1e-6),
             "Over the videos with length >= fixed, average the fraction of window frames not kept. A centre "
             "crop keeps frames (L - fixed) // 2 ... (L - fixed) // 2 + fixed - 1 (mrnn_variants.fixed_length).")


def check_05_2(max_change: float) -> None:
    """The largest change of the other videos' outputs when video 0's frames change."""
    from mmarnn_min.routing import masked_routing

    torch.manual_seed(0)
    h = torch.randn(6, 12, 5, dtype=torch.float64)
    lengths, weight = torch.tensor([12, 9, 5, 5, 1, 0]), torch.randn(4, 60, dtype=torch.float64)
    changed = h.clone()
    changed[0] = torch.randn(12, 5, dtype=torch.float64)
    expected = float((masked_routing(changed, lengths, weight) - masked_routing(h, lengths, weight))[1:].abs().max())
    _verdict("5.2", _close(max_change, expected, 0.0), "Compare the outputs of videos 1 .. B-1 before and after: "
             "out[b] reads h[b] only, so how large can the change be?")


def check_05_3(step: int) -> None:
    """Plain Adam (lr 0.01, betas (0.9, 0.999)) on one float64 weight whose gradient is 1 at
    step 1 and 0 at every later step: the first step k whose change is below 1e-6."""
    weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.Adam([weight], lr=0.01)
    for k in range(1, 100_000):
        weight.grad = torch.ones_like(weight) if k == 1 else torch.zeros_like(weight)
        before = weight.item()
        optimizer.step()
        if abs(weight.item() - before) < 1e-6:
            break
    _verdict("5.3", int(step) == k, "After step 1 the moments only decay: m_k = beta1^(k-1) m_1 and "
             "v_k = beta2^(k-1) v_1, each divided by its bias correction. Count steps from 1 (the step with the "
             "gradient) and stop at the first change below 1e-6.")


# ---- lesson 6: the extension (its current exercises) ----------------------------------------

def planted_selftest_report(original: str, planted: str) -> str:
    """What the emulator's self-test prints when ``original`` (a piece of routing_kernels.cuh,
    found exactly once) is replaced by ``planted`` in a copy of the sources."""
    import subprocess
    import tempfile

    from mmarnn_min import extension

    sources = extension.copy_sources(Path(tempfile.mkdtemp(prefix="lesson6-check-")))
    kernels = sources / "routing_kernels.cuh"
    assert kernels.read_text().count(original) == 1, "the kernels changed: update the lesson's exercise"
    kernels.write_text(kernels.read_text().replace(original, planted))
    run = subprocess.run([str(extension.build_selftest(sources))], capture_output=True, text=True, timeout=300)
    return run.stdout + run.stderr


END_OF_LOOP_BARRIER = "acc[i][j] += a[i] * w[j];\n    }\n    __syncthreads();\n  }\n"
PADDING_GUARD = "k < k_stop && k < k_video ? acc_t(h[(b0 + i) * s.columns + k])"


def check_06_1(array: str) -> None:
    """The shared array the emulator names when the barrier at the end of the forward kernel's
    tile loop is deleted."""
    report = planted_selftest_report(END_OF_LOOP_BARRIER, END_OF_LOOP_BARRIER.replace("    __syncthreads();\n", ""))
    found = re.search(r"shared-memory race: thread \d+ of block \([^)]*\) (?:reads|writes) (\w+)\[", report)
    assert found, f"the planted race was not reported: {report}"
    _verdict("6.1", array.strip() == found.group(1),
             "Which tile does a thread overwrite with the next slice while a slower thread still reads it? Run "
             "the self-test on the planted copy (as the lesson does) and read the array the report names.")


def check_06_2(index: int, value: float) -> None:
    """The output the self-test finds wrong, and its value, when the forward kernel's h load no
    longer stops at a video's length (it reads the padding, which the self-test fills with NaN)."""
    report = planted_selftest_report(PADDING_GUARD, PADDING_GUARD.replace(" && k < k_video", ""))
    found = re.search(r"wrong result: out\[(\d+)\] = (\S+),", report)
    assert found, f"the planted padding read was not reported: {report}"
    expected_index, expected_value = int(found.group(1)), float(found.group(2))
    same_value = (math.isnan(value) and math.isnan(expected_value)) or _close(value, expected_value, 1e-4)
    _verdict("6.2", index == expected_index and same_value,
             "Plant the change in a copy, build and run the self-test, and read its 'wrong result' line: the "
             "output's index and the value it got.")


def check_06_3(piece: str, error: type) -> None:
    """What torch.compile needs of the registered pieces (the torch.library function), and the
    exception a length > T raises inside the compiled function."""
    from mmarnn_min.routing import available_backends, masked_routing

    backend = "extension" if "extension" in available_backends() else "fallback"
    compiled = torch.compile(lambda h, lengths, w: masked_routing(h, lengths, w, backend=backend), backend="aot_eager")
    try:
        compiled(torch.randn(2, 3, 4), torch.tensor([4, 1]), torch.randn(5, 12))
        raised = None
    except Exception as exception:  # noqa: BLE001 - the type is the answer
        raised = type(exception)
    _verdict("6.3", piece.strip().removeprefix("torch.library.") == "register_fake" and raised is not None
             and error is raised, "A compiler traces the operator with FakeTensors (shapes, no data): which "
             "registration computes an output's shape? And pass the exception class itself, as the compiled call raised it.")


# ---- lesson 7: correlation losses -----------------------------------------------------------

def check_07_1(calibrate: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    """``calibrate(predictions (N, C), labels (N, C)) -> (a (C,), b (C,))``, the least-squares
    fit labels ~ a * predictions + b per column; it must leave every column's Pearson as it is
    when a > 0."""
    from mmarnn_min.metrics import pearson

    rng = np.random.default_rng(0)
    labels = rng.random((200, 3))
    predictions = 3.0 * labels + rng.standard_normal((200, 3)) - 2.0
    a, b = (np.asarray(v, dtype=np.float64) for v in calibrate(predictions, labels))
    expected = np.array([np.polyfit(predictions[:, c], labels[:, c], 1) for c in range(3)])   # (C, 2): a, b
    ok = a.shape == (3,) and b.shape == (3,) and np.allclose(a, expected[:, 0]) and np.allclose(b, expected[:, 1])
    _verdict("7.1", ok and np.allclose(pearson(a * predictions + b, labels), pearson(predictions, labels)),
             "Per column c: a = cov(P_c, Y_c) / var(P_c), b = mean(Y_c) - a mean(P_c) (np.polyfit(P_c, Y_c, 1) "
             "gives the same).")


def check_07_2(values: Iterable[float]) -> None:
    """Every value the Pearson loss takes on a batch of 2 videos (one column, two different
    predictions, two different labels)."""
    from mmarnn_min.losses import pearson_loss

    generator = torch.Generator().manual_seed(0)
    seen = {round(pearson_loss(torch.randn(2, 1, generator=generator, dtype=torch.float64),
                               torch.randn(2, 1, generator=generator, dtype=torch.float64)).item(), 3)
            for _ in range(200)}                          # to 3 decimals: the loss's eps shifts it by ~eps / var
    _verdict("7.2", {round(float(v), 3) for v in values} == seen, "Two points always lie on a line: what can "
             "their correlation be? Try pearson_loss on a few random (2, 1) batches.")


# ---- lesson 8: MRNN from its parts ----------------------------------------------------------

def check_08_1(total: int, routed_fraction: float) -> None:
    """The weights of MRNN at the paper's sizes, and the fraction held by the routed weight W."""
    from mmarnn_min.mrnn import MRNN

    model = MRNN(preset("paper").mrnn.model)
    expected = sum(p.numel() for p in model.parameters())
    fraction = model.routing_weight.numel() / expected
    _verdict("8.1", int(total) == expected and _close(routed_fraction, fraction, 1e-3),
             "Sum the GRU's 3H x I + 3H x H + 2 x 3H, the routed layer's F x T*D + F and the head's 7 x F + 7 "
             "with the paper preset's sizes (preset('paper').mrnn.model).")


def check_08_2(mrnn_function: Callable[[dict, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """``mrnn_function(state, z, lengths) -> (B, 7)`` equals MRNN in float64 for the MRNN whose
    ``state_dict()`` is ``state``."""
    from mmarnn_min.mrnn import MRNN, MRNNConfig

    torch.manual_seed(0)
    model = MRNN(MRNNConfig(hidden_size=6, routed_size=5, max_frames=9)).double().eval()
    lengths = torch.tensor([9, 4, 1, 6])
    z = torch.randn(4, 9, affect.AFFECT_DIM, dtype=torch.float64)
    with torch.no_grad():
        expected = model(z, lengths)
        got = mrnn_function({name: t.clone() for name, t in model.state_dict().items()}, z, lengths)
    ok = tuple(got.shape) == tuple(expected.shape) and float((got - expected).abs().max()) < 1e-12
    _verdict("8.2", ok, "GRU (gru_layer with h0 = 0 and the four rnn.* tensors), then route(h, lengths), "
             "F.linear with the first L*D columns of routing_weight and routing_bias, ReLU, the head, sigmoid.")


def check_08_3(moved_lazy: float, moved_adam: float) -> None:
    """Training on videos of at most T/2 frames: how far the routed blocks W_t, t >= T/2, move
    under LazyAdam and under torch.optim.Adam (largest |change|)."""
    from mmarnn_min.mrnn import MRNN, MRNNConfig
    from mmarnn_min.optim import mrnn_optimizer

    moved = {}
    for name in ("lazy", "adam"):
        torch.manual_seed(0)
        model = MRNN(MRNNConfig(hidden_size=6, routed_size=5, max_frames=8))
        optimizer = mrnn_optimizer(model, lr=0.01) if name == "lazy" else torch.optim.Adam(model.parameters(), lr=0.01)
        before = model.routing_weight.detach().clone()
        for _ in range(5):
            lengths = torch.randint(1, 5, (6,))
            loss = model(torch.randn(6, 4, affect.AFFECT_DIM), lengths).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(**({"frames_reached": int(lengths.max())} if name == "lazy" else {}))
        moved[name] = float((model.routing_weight.detach() - before)[:, 4 * 6:].abs().max())
    _verdict("8.3", _close(moved_lazy, moved["lazy"], 1e-12) and _close(moved_adam, moved["adam"], 1e-12),
             "A block that never receives a gradient has m = v = 0 in Adam too. What does Adam's update "
             "m / (sqrt(v) + eps) give then?")


# ---- lesson 9: the pipeline -----------------------------------------------------------------

def check_09_1(value: str, run: str | Path) -> None:
    """The one of the 26 values of z (names as in ``AFFECT_NAMES``) that the run's MMA gets
    farthest from the truth on the validation videos (mean absolute error over all frames)."""
    from mmarnn_min.config import load_config
    from mmarnn_min.data.sequences import oracle_sequences
    from mmarnn_min.stages.features import load_run_features

    estimated = load_run_features(run)["val"]
    truth = oracle_sequences(load_config(str(Path(run) / "config.json")).data, "val")
    errors = torch.cat([(e - t).abs() for e, t in zip(estimated.features, truth.features)]).mean(0)   # (26,)
    _verdict("9.1", value == AFFECT_NAMES[int(errors.argmax())], "Answer with one of checks.AFFECT_NAMES. Stack "
             "every validation frame of load_run_features(run)['val'] and of oracle_sequences(data, 'val') and "
             "take the column with the largest mean |difference|.")


def check_09_2(val_pearson: float, run: str | Path) -> None:
    """The mean validation Pearson of the oracle's best checkpoint (``run/oracle/best.pt``), on
    the true per-frame vectors of the validation videos."""
    from mmarnn_min.checkpoints import load_mrnn
    from mmarnn_min.config import load_config
    from mmarnn_min.data.sequences import oracle_sequences
    from mmarnn_min.stages.mrnn import evaluate

    run = Path(run)
    val = oracle_sequences(load_config(str(run / "config.json")).data, "val")
    expected = evaluate(load_mrnn(run / "oracle" / "best.pt"), val, torch.device("cpu"))["pearson_mean"]
    recorded = json.loads((run / "oracle" / "metrics.json").read_text())["val_pearson_mean"]
    assert abs(expected - recorded) < 1e-5, (expected, recorded)          # the stage recorded what it measured
    _verdict("9.2", _close(val_pearson, expected, 1e-5), "load_mrnn(run / 'oracle' / 'best.pt'), then the mean "
             "over the 7 reactions of metrics.pearson of its predictions on oracle_sequences(data, 'val').")


def check_09_3(largest_change: float, run: str | Path) -> None:
    """After stage e2e: the largest change of any of MMA's batch-norm running statistics
    between the mma stage's checkpoint and e2e's."""
    from mmarnn_min.checkpoints import read_checkpoint

    run = Path(run)
    before = read_checkpoint(run / "mma" / "best.pt")["model"]
    after = read_checkpoint(run / "e2e" / "best.pt")["mma"]
    statistics = [name for name in before if name.endswith(("running_mean", "running_var"))]
    assert statistics, "this MMA has no batch norm"
    expected = max(float((after[name].float() - before[name].float()).abs().max()) for name in statistics)
    _verdict("9.3", _close(largest_change, expected, 1e-9), "Compare every *.running_mean and *.running_var of "
             "read_checkpoint(run / 'mma' / 'best.pt')['model'] with read_checkpoint(run / 'e2e' / "
             "'best.pt')['mma'].")
