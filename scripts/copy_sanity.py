"""Can the embedded student learn to copy digits at a given learning rate? A sanity check of the pretraining
stack (tokenizer builder, the ~0.9M Qwen2 model, AdamW) on the simplest skill every solution needs:
"Please repeat 3 8 5. Sure: 3 8 5." (2-5 digits), loss on every token, then greedy copying of 200 fresh
sequences. docs/results.md ("Why no base could solve") has its results: the copy circuit never forms at 2e-3
and above, and forms within a few hundred steps at 1e-3 and below.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/copy_sanity.py --lr 1e-3 --steps 1500
"""
import argparse
import random

import torch

from sml.train import base_model


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--attention", default=None, help="attention implementation (default: the model's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = random.Random(0)

    def example() -> str:
        digits = " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(2, 5)))
        return f"Please repeat {digits}. Sure: {digits}."

    texts = [example() for _ in range(args.batch_size * args.steps)]
    tokenizer = base_model.train_tokenizer(texts, vocab_size=300)
    model = base_model.build_model(tokenizer, seed=0)
    if args.attention:
        model.config._attn_implementation = args.attention
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        batch = tokenizer(texts[step * args.batch_size:(step + 1) * args.batch_size], return_tensors="pt",
                          padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    copied = 0
    for text in (example() for _ in range(200)):
        cut = text.index("Sure:") + len("Sure:")
        ids = tokenizer(text[:cut], return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        copied += tokenizer.decode(out[0, ids.shape[1]:]).startswith(text[cut:])
    print(f"copy accuracy {copied / 200:.3f}")
    return copied / 200


if __name__ == "__main__":
    main()
