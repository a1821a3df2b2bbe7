"""Whether a change to the engine leaves its dialogues as they were: ``bench.digest`` of every evaluation
cell's dialogues (domain x variant, the pipeline's teacher and dialogue settings), with one torch thread
(``--threads``) and the decoder's default attention (``--attention``).
Run it on two checkouts and compare the lines; equal digests in every cell are what lets a speed-up keep
the pipeline's results (``dvc commit -f`` then records only the new source hashes).

    PYTHONPATH=src python -m benchmarks.same_dialogues --out after.json      (this checkout)
    git worktree add /tmp/before HEAD && cd /tmp/before && PYTHONPATH=src python -m benchmarks.same_dialogues \
        --model $OLDPWD/models/base_student --tasks $OLDPWD/data/tasks --out before.json
"""

from __future__ import annotations

import json

import torch

from benchmarks.attention import cell_arguments, evaluation_cells
from benchmarks.bench import digest
from sml.dialogue.decoding import ATTENTION
from sml.dialogue.student import Student


def main(argv=None) -> dict:
    parser = cell_arguments(__doc__.splitlines()[0], tasks_per_cell=64)
    parser.add_argument("--attention", choices=ATTENTION, default=Student.attention,
                        help="how the decoder runs attention (sml.dialogue.decoding)")
    parser.add_argument("--out", default="", help="also write the digests here, as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    student, cells = evaluation_cells(args)
    student.attention = args.attention
    digests = {}
    for source, variant, run in cells:
        dialogues, took = run()
        digests[f"{source}/{variant}"] = digest(dialogues)
        print(f"{source} {variant}: {digests[f'{source}/{variant}']} ({took:.1f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(digests, f, indent=2)
    return digests


if __name__ == "__main__":
    main()
