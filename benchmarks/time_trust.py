"""How far can a time-aware model's forecasts be trusted? The README's trust table, measured.

    python benchmarks/time_trust.py --model runs/t/model --data data/pines-irr [--out runs/t/time-trust]
        [--split test] [--bank-size 2000] [--bank data/pines-irr-bank.npy] [--write-trust-to-model]

Runs the time-aware evaluation (:func:`crnn.timeeval.evaluate_time`: the model's forecasts of every
test series' target frames from its input frames at their own ages, beside persistence,
linear-in-time and the analog forecast given the same ages) and prints the markdown table for the
README: MSE (0-255 pixels) per forecast-gap bin (target age - last input age) for each forecaster,
persistence / model, and up to which gap the model beats persistence by 2x and by 1.2x. With --out
the evaluation's files (result.json, table.txt, mse_by_gap.png, trust.json) are written there.

It replaces benchmarks/horizon_trust.py (kept: the fixed-grid rollout measurement of the paper's
model) for time-aware forecasts, where the question is a gap in years, not a number of grid steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> dict:
    import argparse

    from crnn.timeeval import BANK_SIZE, evaluate_time, format_time_table, markdown_trust_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a time-aware model directory (model.kind=timevp)")
    p.add_argument("--data", required=True, help="an irregular dataset (jobs/generate.py --irregular)")
    p.add_argument("--out", help="folder for result.json, table.txt, mse_by_gap.png, trust.json")
    p.add_argument("--split", help="default: the model config's data.test_split")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bank-size", type=int, default=BANK_SIZE, help="training trees in the analog bank (0: none)")
    p.add_argument("--bank", help="the analog bank's .npy cache (default <out>/analog_bank.npy)")
    p.add_argument("--bank-workers", type=int, default=0, help="processes rendering the bank (0: all CPUs)")
    p.add_argument("--write-trust-to-model", action="store_true", help="also write <model>/trust.json")
    a = p.parse_args(argv)
    result = evaluate_time(a.model, a.data, out=a.out, split=a.split, device=a.device, bank_size=a.bank_size,
                           bank_path=a.bank, bank_workers=a.bank_workers,
                           write_trust_to_model=a.write_trust_to_model)
    print(format_time_table(result), end="\n\n")
    print(f"<!-- python benchmarks/time_trust.py --model {a.model} --data {a.data}: {result['num_series']} "
          f"{result['split']} series, {result['num_targets']} target frames -->")
    print(markdown_trust_table(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
