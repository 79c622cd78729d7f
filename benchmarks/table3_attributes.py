"""Does the defense hide gender from reconstructions? A short CPU run of Table III (V-C(2)).

Trains a small ``face_cnn`` on real LFW (people with >= 30 images) split at one partition,
for λ = 0 (no defender) and λ > 0 (one deconv defender, Algorithm 1), attacks each model
with the deconv attacker trained on the model's training images, and runs the gender
pipeline on the reconstructions of the 474 test images: detect a face (#DF), classify the
gender of each detected face (#CG), out of #TI. The detector is calibrated on, and the
gender classifier scored on, the ORIGINAL test images; the classifier is trained on LFW
people who are not among the model's classes. Not a test: it prints a table.

    python benchmarks/table3_attributes.py                                  # ../shared/data/lfw
    python benchmarks/table3_attributes.py --partition pool2 --lams 0,0.1,1 --epochs 10
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from pp_cluster.config import AttackSpec, ModelSpec
from pp_cluster.data import load_dataset
from pp_cluster.pipeline import attack_inputs, run_attack, train_model
from pp_cluster.privacy.attributes import FaceDetector, GenderClassifier, attribute_metrics

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    shared = Path(os.environ.get("PP_SHARED_DATA", REPO.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-root", type=Path, default=shared / "lfw", help="LFW folder (with gender/ beside the images)"
    )
    p.add_argument("--partition", default="pool1")
    p.add_argument("--lams", default="0,1", help="comma-separated λ; 0 = no defender")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--widths", default="16,32,64,128", help="face_cnn channel widths (time)")
    p.add_argument("--fc", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--attacker", default="deconv")
    p.add_argument("--attack-epochs", type=int, default=10)
    p.add_argument(
        "--calibrate", type=int, default=200, help="original test images the detector is calibrated on"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="for training and attacks; detection and HOG run on the CPU",
    )
    return p


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    options = {"min_faces": 30, "size": 64, "disjoint": True}
    ds = load_dataset("lfw", args.data_root, **options)
    vr = ds.value_range
    detector = FaceDetector(vr).calibrate(ds.test.x[: args.calibrate])
    classifier = GenderClassifier(vr).fit(ds.disjoint)
    cal = detector.calibration
    print(
        f"LFW {len(ds.train)} train / {len(ds.test)} test images of {ds.num_classes} people; gender classifier "
        f"trained on {len(ds.disjoint)} images of other people"
    )
    print(
        f"detector {detector.params}: {cal['detection_rate']:.3f} of {cal['n_originals']} originals, "
        f"{cal['false_rate']:.3f} of {cal['n_negatives']} non-face crops   [{time.perf_counter() - t0:.0f} s]"
    )

    lams = [float(v) for v in args.lams.split(",")]
    shape = (ds.image_shape, ds.num_classes, vr)
    rows = []
    for lam in lams:
        spec = ModelSpec(
            dataset="lfw",
            arch="face_cnn",
            partition=args.partition,
            lam=lam,
            defenders=("deconv",) if lam > 0 else (),
            distance="ssim",
            seed=args.seed,
            epochs=args.epochs,
            batch_size=32,
            data_root=str(args.data_root),
            dataset_options=options,
            arch_options={"widths": tuple(int(w) for w in args.widths.split(",")), "fc": args.fc},
            train_overrides={"lr": args.lr},
        )
        t = time.perf_counter()
        model, result = train_model(spec, ds, args.device)
        inputs = attack_inputs(model.local, ds, "train", 1.0, args.seed, args.device)
        attack = AttackSpec(args.attacker, epochs=args.attack_epochs)
        row, res = run_attack(
            attack, model.net, spec, shape, inputs, seed=args.seed, device=args.device, n_keep=len(ds.test)
        )
        recs = res.reconstructions.cpu() * (vr[1] - vr[0]) + vr[0]  # AttackResult keeps [0, 1]
        m = attribute_metrics(recs, ds.test, detector, classifier)
        rows.append((lam, result.test_acc, row["ssim"], m))
        print(
            f"λ={lam:g}: test acc {result.test_acc:.3f}, attacker SSIM {row['ssim']:.3f}, "
            f"#CG/#DF/#TI {m['n_cg']}/{m['n_df']}/{m['n_ti']}   [{time.perf_counter() - t:.0f} s]",
            flush=True,
        )

    m0 = rows[0][3]
    print(
        f"\nTable III, {args.partition}, {args.epochs} epochs, {args.attacker} attacker ({args.attack_epochs} epochs)"
    )
    print(f"{'':12} {'test acc':>8} {'SSIM':>6}  #CG / #DF / #TI")
    print(f"{'originals':12} {'':>8} {'':>6}  {m0['n_cg_original']} / {m0['n_df_original']} / {m0['n_ti']}")
    for lam, acc, ssim, m in rows:
        print(f"{f'λ = {lam:g}':12} {acc:8.3f} {ssim:6.3f}  {m['n_cg']} / {m['n_df']} / {m['n_ti']}")
    print(
        f"\ndetector rate on originals {m0['detector_rate_original']:.3f}; gender classifier on originals: "
        f"accuracy {m0['gender_acc']:.3f}, balanced {m0['gender_balanced_acc']:.3f} "
        f"({int((ds.test.attrs['gender'] == 1).sum())} male / {int((ds.test.attrs['gender'] == 0).sum())} female)"
        f"   [total {time.perf_counter() - t0:.0f} s]"
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
