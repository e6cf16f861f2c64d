"""The command line as a user meets it: `python -m smollm2 ...` in a subprocess, from a folder outside the repo.

Every mistake gives one `error:` line that names the flag, a non-zero exit status and no traceback, and is
caught before a model loads (each case below would take seconds longer if it loaded the 135M model)."""
import ast
import bz2
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import smollm2
from smollm2.evaluate import HELLASWAG_PATH, load_hellaswag

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None, cache=None):
    """(exit status, stdout, stderr) of `python -m smollm2 ARGS`; `cache`: its SMOLLM2_CACHE folder."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", **({"SMOLLM2_CACHE": str(cache)} if cache else {})}
    done = subprocess.run([sys.executable, "-m", "smollm2", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env)
    return done.returncode, done.stdout, done.stderr


MISTAKES = [  # (arguments, what the error line must say)
    (["generat", "Hi"], "unknown command 'generat'"),
    (["generate", "Hi", "--temperature", "-1"], "--temperature: must be a number >= 0"),
    (["generate", "Hi", "--top-p", "1.5"], "--top-p: must be in (0, 1]"),
    (["generate", "Hi", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
    (["generate", "Hi", "--device", "cuda"], "--device: 'cuda' is not available here"),
    (["chat", "--message", "Hi", "--device", "mps"], "--device: 'mps' is not available here"),
    (["generate", "Hi", "--weights", "smollm2-360m"], "--weights: source='smollm2-360m': no such file"),
    (["generate", "Hi", "--checkpoint", "nope/"], "--checkpoint: no such file or folder"),
    (["generate", "Hi", "--adapter", "no-adapter"], "--adapter: no-adapter is not a LoRA adapter folder"),
    (["generate", "Hi", "--quantize", "int3"], "argument --quantize: invalid choice: 'int3'"),
    (["generate", "Hi", "--speculative", "lookup", "--repetition-penalty", "1.2"], "--repetition-penalty: not supp"),
    (["eval", "--task", "hellaswag", "--limit", "0"], "argument --limit: expected an integer >= 1, got '0'"),
    (["eval", "--task", "hellaswag", "--data", "missing.txt"], "--data: no such file: missing.txt"),
    (["eval", "--task", "mmlu"], "argument --task: invalid choice: 'mmlu'"),
    (["export", "--gguf", "nodir/x.gguf"], "--gguf: the folder nodir does not exist"),
    (["export", "--gguf", "x.gguf", "--dtype", "q4_k_m"], "argument --dtype: invalid choice: 'q4_k_m'"),
    (["serve", "--port", "70000"], "--port: expected an integer in [0, 65535], got 70000"),
    (["serve", "--max-tokens", "0"], "--max-tokens: expected an integer >= 1, got 0"),
    (["serve", "--max-batch", "0"], "--max-batch: expected an integer >= 1, got 0"),
    (["serve", "--host", "no such host"], "--host: expected an IP address or a host name"),
    (["train", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["train", "--device", "cuda"], "--device: 'cuda' is not available here"),
    (["train", "--threads", "0"], "argument --threads: expected an integer >= 1, got '0'"),
    (["finetune", "--data", "chat.jsonl"], "the following arguments are required: --output"),
    (["finetune", "--data", "missing.jsonl", "--output", "out"], "--data: no such file: missing.jsonl"),
    (["finetune", "--data", "chat.jsonl", "--output", "out", "--lora-r", "-1"], "--lora-r: must be >= 0"),
    (["demo", "--train-steps", "-1"], "--train-steps: expected an integer >= 0"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, says", MISTAKES, ids=[" ".join(a)[:40] for a, _ in MISTAKES])
def test_a_mistake_is_one_clear_line(tmp_path, args, says):
    (tmp_path / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "Hi"}, '
                                         '{"role": "assistant", "content": "Hello."}]}\n')
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    (tmp_path / "chat.jsonl").rename(work / "chat.jsonl")
    status, out, err = run(*args, cwd=work, cache=cache)
    assert status == 2, (status, err)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], err
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert list(work.iterdir()) == [work / "chat.jsonl"], "a refused command wrote nothing"
    assert not (cache / "weights").exists() and not (cache / "tokenizers").exists(), "refused before any load"


def test_version_and_help():
    status, out, _ = run("--version")
    assert status == 0 and out.startswith(f"smollm2 {smollm2.__version__} (torch ")
    status, out, _ = run("--help")
    assert status == 0
    for name in ("demo", "params", "train", "generate", "chat", "eval", "finetune", "export", "serve"):
        assert f"  {name} " in out, name
    assert run()[0] == 2                                                   # no command: the list, status 2


def test_every_help_shows_defaults_and_the_shared_model_flags():
    from smollm2.cli import COMMANDS

    for name in ("generate", "chat", "eval", "export", "serve", "finetune"):
        with pytest.raises(SystemExit) as e:
            COMMANDS[name][1](["--help"])
        assert e.value.code == 0
    status, out, _ = run("generate", "--help")
    assert status == 0 and out.startswith("usage: python -m smollm2 generate")
    assert "(default: 200)" in out and "(default: 0.7)" in out and "(default: auto)" in out
    for flag in ("--weights", "--checkpoint", "--adapter", "--tokenizer", "--quantize", "--device"):
        assert flag in out, flag
    status, out, _ = run("export", "--help")
    assert "--adapter" in out and "--quantize" not in out and "(default: f16)" in out


@pytest.mark.parametrize("first", ["smollm2.cli", "smollm2.cli_quantize", "smollm2.cli_finetune"])
def test_commands_and_model_options_register_in_notebook_order(first):
    """`smollm2/cli.py` composes the command modules; whichever is imported first, the model options apply in
    notebook order (04 --device, 07 --adapter merged into the float weights, then 08 --quantize)."""
    code = (f"import {first}, smollm2.cli, smollm2.cli_base as b, smollm2.cli_generation as g; "
            "print([list(b.MODEL_OPTIONS), list(g.DECODING_OPTIONS), sorted(b.COMMANDS)])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    options, decoding, commands = ast.literal_eval(done.stdout.strip())
    assert options == ["device", "adapter", "quantize"] and decoding == ["speculative"]
    assert commands == sorted(["demo", "params", "train", "generate", "chat", "eval", "finetune", "export", "serve"])


def test_source_value_names_the_given_source():
    import smollm2.cli  # noqa: F401                                     # registers --checkpoint (notebook 04)
    from smollm2.cli_base import add_source_flags, new_parser, source_value
    from smollm2.weights import DEFAULT_WEIGHTS

    parser = new_parser("x", "a parser with the model flags")
    add_source_flags(parser)
    assert source_value(parser.parse_args([])) == DEFAULT_WEIGHTS
    assert source_value(parser.parse_args(["--weights", "some/folder"])) == "some/folder"
    assert source_value(parser.parse_args(["--checkpoint", "ck/step_5.pt"])) == "ck/step_5.pt"


def test_model_flags_per_command():
    """The same source flags everywhere a model loads; --quantize and --device only where they apply."""
    import smollm2.cli                                                     # registers every model option
    from smollm2.cli_evaluate import _eval_parser
    from smollm2.cli_finetune import _finetune_parser
    from smollm2.cli_generation import _generation_parser
    from smollm2.cli_serve import _serve_parser

    def flags(parser):
        return {s for a in parser._actions for s in a.option_strings}

    shared = {"--weights", "--checkpoint", "--adapter", "--tokenizer"}
    for parser in (_generation_parser("generate"), _generation_parser("chat"), _eval_parser(), _serve_parser()):
        assert shared | {"--quantize", "--int8", "--device"} <= flags(parser)
    tune = flags(_finetune_parser())
    assert shared | {"--device", "--output", "--data"} <= tune and "--quantize" not in tune
    assert "--input" not in tune                                           # --data replaces it
    args = _finetune_parser().parse_args(["--data", "x.jsonl", "--output", "o"])
    assert (args.target_steps, args.learning_rate, args.sample_interval) == (200, 2e-4, 0)   # fine-tuning defaults
    assert _eval_parser().parse_args(["--task", "hellaswag", "--int8"]).quantize == "int8"  # the old spelling


def test_the_hellaswag_data_ships_inside_the_package():
    assert HELLASWAG_PATH.is_file() and HELLASWAG_PATH.parent == Path(smollm2.__file__).parent / "assets"
    with bz2.open(HELLASWAG_PATH, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == "d572539320eb2050e858ca34b495bbe2103e3b3f1391a9c3bcdf215b0bb93bd1"
    assert len(load_hellaswag()) == 10042
    assert (HELLASWAG_PATH.parent / "LICENSE.hellaswag").read_text().startswith("MIT License")


def test_nothing_reads_outside_the_project():
    """A user's clone has nothing beside it: no product file may point at a sibling folder."""
    sibling = "../" + "shared"
    hits = [str(p.relative_to(ROOT)) for folder in ("smollm2", "notebooks", "tests", "benchmarks", "tools")
            for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".ipynb", ".md", ".sh")
            and (sibling in p.read_text(encoding="utf-8", errors="replace")
                 or "shared" + "/data" in p.read_text(encoding="utf-8", errors="replace"))]
    hits += [name for name in ("README.md", "Makefile", ".ci/run", "conftest.py")
             if (ROOT / name).is_file() and sibling in (ROOT / name).read_text(encoding="utf-8")]
    assert not hits, hits


def test_the_example_chats_fine_tune():
    from smollm2.sft import read_chat_jsonl

    chats = read_chat_jsonl(ROOT / "data" / "chat_example.jsonl")
    assert len(chats) >= 10 and all(c[-1]["role"] == "assistant" for c in chats)


@pytest.mark.slow
def test_serve_on_a_busy_port_fails_before_loading_and_announces_nothing(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        status, out, err = run("serve", "--port", str(busy.getsockname()[1]), cache=tmp_path / "cache")
    assert status == 1 and "serving" not in out, (out, err)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Address already in use" in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "cache" / "weights").exists()                  # the model was never loaded
