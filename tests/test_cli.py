import json
import subprocess
import sys

from conftest import tone, write

from speechrnn.cli import _decoding, main


def test_import_stats_and_errors(tmp_path, capsys):
    corpus = tmp_path / "c"
    lines = ["audio\ttext\tspeaker\tsplit"]
    for i in range(4):
        write(corpus / f"{i}.wav", tone(1.0))
        lines.append(f"{i}.wav\thello number {i}\ts{i}\t{'test' if i == 3 else 'train'}")
    (corpus / "t.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["data", "import", "generic", "--source", str(corpus), "--out", str(out),
                 "--quiet", "--format", "tsv"]) == 0
    printed = capsys.readouterr().out
    assert "train.tsv: 3 utterances" in printed and "rejected: 0" in printed
    assert main(["data", "stats", str(out / "train.tsv"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats[str(out / "train.tsv")]["utterances"] == 3
    assert main(["data", "import", "kaldi", "--source", str(tmp_path / "x"), "--out",
                 str(out)]) == 2
    assert "x: corpus source not found" in capsys.readouterr().err


def test_console_script_runs_as_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "speechrnn", "data", "stats",
                           str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "manifest not found" in proc.stderr and "Traceback" not in proc.stderr


def test_synth_command(needs_espeak, tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--train", "6", "--dev", "2",
                 "--test", "2", "--quiet"]) == 0
    assert "train.jsonl: 6 utterances" in capsys.readouterr().out


def test_help_introduces_the_tool_and_version(capsys):
    import pytest

    from speechrnn import __version__

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "train your own speech recognizer" in text
    assert "speechrnn train --config pipelines/configs/synth.yaml" in text
    assert "``" not in text  # no raw reST
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"speechrnn {__version__}"


def test_cli_defaults_come_from_the_config_dataclasses():
    from speechrnn.cli import build_parser
    from speechrnn.config import DataConfig, EvalConfig, FeatureConfig, ModelConfig

    parser = build_parser()
    synth = parser.parse_args(["data", "synth", "--out", "x"])
    assert (synth.train, synth.dev, synth.test, synth.digit_share, synth.seed, synth.format) \
        == (DataConfig.synth_train, DataConfig.synth_dev, DataConfig.synth_test,
            DataConfig.synth_digit_share, DataConfig.seed, DataConfig.format)
    assert (synth.hop_ms, synth.subsampling) == (FeatureConfig.hop_ms, ModelConfig.subsampling)
    imported = parser.parse_args(["data", "import", "fsdd", "--source", "s", "--out", "x"])
    assert (imported.per_speaker, imported.perturb) == (DataConfig.per_speaker,
                                                        DataConfig.perturb)
    ev = parser.parse_args(["evaluate", "--model", "m", "--manifest", "t.jsonl",
                            "--decoder", "beam"])
    options = _decoding(ev).options
    assert (options.beam_width, ev.lm_order, options.lm_weight, options.word_bonus) == (
        EvalConfig.beam_width, EvalConfig.lm_order, EvalConfig.lm_weight, EvalConfig.word_bonus)


def test_a_beam_width_alone_changes_the_models_own_beam_search(tmp_path):
    from speechrnn.cli import build_parser
    from speechrnn.decoding import Decoding, DecodingOptions
    from speechrnn.inference import save_decoding
    from speechrnn.lm_build import lm_from_sources

    text = tmp_path / "sentences.txt"
    text.write_text("one two three\nthree two one\n")
    own = Decoding(DecodingOptions("beam", beam_width=64, lm_weight=1.2, word_bonus=2.0),
                   lm_from_sources([], [text], order=2))
    save_decoding(tmp_path, own)
    parser = build_parser()

    def decoding(*flags):
        return _decoding(parser.parse_args(["transcribe", "--model", str(tmp_path), "x.wav",
                                            *flags]))

    assert decoding() is None  # no flag: the model's own, as the transcriber loads it
    wider = decoding("--beam-width", "256")
    assert (wider.options.method, wider.options.beam_width, wider.options.lm_weight,
            wider.options.word_bonus) == ("beam", 256, 1.2, 2.0)
    assert wider.lm is not None and "three" in wider.lm.vocab
    assert decoding("--word-bonus", "0").options.beam_width == 64
    # a model that saved no decoding: beam search without an LM, at the width asked
    (tmp_path / "inference.json").unlink()
    plain = decoding("--beam-width", "8")
    assert (plain.options.method, plain.options.beam_width, plain.lm) == ("beam", 8, None)


def test_user_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "none.jsonl")
    assert main(["data", "stats", missing]) == 2
    err = capsys.readouterr().err
    assert "manifest not found" in err and "Traceback" not in err
    assert main(["-v", "data", "stats", missing]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("manifest not found")


def test_a_bug_is_not_dressed_up_as_a_user_error(monkeypatch):
    """Only the library's own errors (and unreadable files) become one-line messages:
    a programming error keeps its traceback."""
    import pytest

    from speechrnn import cli

    def broken(args):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(cli, "cmd_stats", broken)
    with pytest.raises(ZeroDivisionError):
        main(["data", "stats", "x.jsonl"])


def test_lm_command_builds_an_arpa_that_evaluate_and_transcribe_take(tmp_path, capsys):
    from speechrnn.lm import WordLM

    text = tmp_path / "sentences.txt"
    text.write_text("One two three.\nthree two one\n")
    out = tmp_path / "lm.arpa"
    assert main(["lm", "--text", str(text), "--out", str(out), "--order", "2"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["vocabulary"] == 3 and stats["ngrams"]["2"] > 0 and out.is_file()
    assert WordLM.load(out).vocab == {"one", "two", "three"}
    assert main(["lm", "--out", str(out)]) == 2  # nothing to build from: one-line error
    assert "--text" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(tmp_path), "--decoder", "beam", "--lm", str(out),
                 "--lm-text", str(text), str(text)]) == 2
    assert "not both" in capsys.readouterr().err


def test_decoding_flags_default_to_the_models_own(tmp_path):
    """No decoding flag: the model's saved decoding (else greedy); an LM alone means beam."""
    from speechrnn.cli import _decoding, build_parser
    from speechrnn.lm_build import lm_from_texts

    def flags(*args):
        return _decoding(build_parser().parse_args(["transcribe", "--model", "m", *args,
                                                    "a.wav"]))

    assert flags() is None
    assert flags("--decoder", "greedy").options.method == "greedy"
    assert flags("--decoder", "beam").lm is None
    arpa = lm_from_texts(["one two three"], order=2).write_arpa(tmp_path / "lm.arpa")
    chosen = flags("--lm", str(arpa), "--lm-weight", "0.4")
    assert chosen.options.method == "beam" and chosen.options.lm_weight == 0.4
    assert chosen.lm.vocab == {"one", "two", "three"}
