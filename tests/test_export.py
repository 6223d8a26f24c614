"""`photocritic export --format onnx` and `score --model FILE.onnx`; `photocritic report`."""

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest

import photocritic
from photocritic.cli import main

from conftest import REPO, write_broken_files

EXAMPLES = sorted(str(p) for p in (REPO / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The examples plus one broken file of each kind."""
    d = tmp_path_factory.mktemp("onnx-inputs")
    for p in EXAMPLES:
        shutil.copy(p, d)
    write_broken_files(d)
    return sorted(str(p) for p in d.iterdir())


def _export(model, out) -> int:
    return main(["export", "--model", str(model), "--format", "onnx", "--output", str(out)])


def _compare(torch_model, onnx_file, files):
    ref = photocritic.load(str(torch_model), precision="fp32").score(files)
    got = photocritic.load(str(onnx_file)).score(files)
    assert [r.status for r in got] == [r.status for r in ref]
    assert sum(r.status == "ok" for r in ref) == len(EXAMPLES)
    ok = [k for k, r in enumerate(ref) if r.status == "ok"]
    np.testing.assert_allclose([got[k].score for k in ok], [ref[k].score for k in ok], atol=1e-4, rtol=0)
    return ref, got


@pytest.mark.parametrize("which", ["lite", "nima", "linear"])
def test_onnx_scores_equal_pytorch(which, trained, inputs, tmp_path):
    """One graph (tower + method + score map) scores as the torch model does
    to 1e-4 in fp32; bad files fail the same way; distributions match too."""
    model = "lite" if which == "lite" else trained[which]
    out = tmp_path / f"{which}.onnx"
    assert _export(model, out) == 0
    ref, got = _compare(model, out, inputs)
    if which == "nima":
        ok = [k for k, r in enumerate(ref) if r.status == "ok"]
        np.testing.assert_allclose([got[k].distribution for k in ok], [ref[k].distribution for k in ok],
                                   atol=1e-5, rtol=0)
        np.testing.assert_allclose([sum(d) for d in (got[k].distribution for k in ok)], 1.0, atol=1e-5)
    if which == "lite":  # the metadata says how to feed the graph
        import onnx

        pre = photocritic.load("lite").preprocess
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(meta["photocritic.preprocess"]) == json.loads(json.dumps(asdict(pre)))
        assert "resize the shorter side to 256 px with bicubic" in onnx.load(str(out)).doc_string


def test_onnx_zero_shot_clip(tiny_clip_dir, tmp_path):
    """A zero-shot CLIP (antonym prompts): the text side is folded into the graph as constants."""
    out = tmp_path / "clip.onnx"
    assert _export(tiny_clip_dir, out) == 0
    _compare(tiny_clip_dir, out, EXAMPLES)


def test_onnx_cli_score_and_refusals(trained, tmp_path, capsys):
    from photocritic.methods.base import Targets
    from photocritic.methods.multiattr import AttributeHeads
    from photocritic.models import Critic
    from photocritic.scoremap import ScoreMap

    out = tmp_path / "m.onnx"
    assert _export(trained["mlp"], out) == 0
    csv = tmp_path / "s.csv"
    assert main(["score", *EXAMPLES, "--model", str(out), "--output", str(csv), "-q"]) == 0
    ref = photocritic.load(str(trained["mlp"]), precision="fp32").score(EXAMPLES)
    import csv as csvmod

    rows = list(csvmod.DictReader(open(csv)))
    np.testing.assert_allclose([float(r["score"]) for r in rows], [r.score for r in ref], atol=1e-4)
    capsys.readouterr()  # cull groups by embeddings, which an exported scorer does not give
    assert main(["cull", str(REPO / "examples"), "--model", str(out), "-q"]) == 2
    assert "gives scores only" in capsys.readouterr().err

    # per-attribute methods are refused, with exit 2 and the reason
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    t = Targets(rng.uniform(1, 10, 30), attributes=rng.uniform(1, 10, (30, 2)), attribute_names=("light", "colour"))
    heads = AttributeHeads(view="image.pooled").fit({"image.pooled": x}, t, val=({"image.pooled": x}, t))
    Critic({"type": "efficientnet-lite0"}, heads, ScoreMap(0, 1, "linear"), name="a").save(tmp_path / "attr")
    capsys.readouterr()
    assert _export(tmp_path / "attr", tmp_path / "a.onnx") == 2
    assert "per-attribute outputs are not part of the ONNX export" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "a.onnx.part").exists()
    assert _export("lite", tmp_path / "x.txt") == 2

    # an ONNX file that photocritic did not write: a clear error, exit 2
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), str(tmp_path / "other.onnx"))
    capsys.readouterr()
    assert main(["score", EXAMPLES[0], "--model", str(tmp_path / "other.onnx"), "-q"]) == 2
    assert "without photocritic's metadata" in capsys.readouterr().err


# -- photocritic report -----------------------------------------------------------

def test_report_page(inputs, tmp_path):
    """A self-contained page: every scored file as a thumbnail card in score
    order, a histogram with every score counted, each failure with its reason."""
    import html
    import re

    res = tmp_path / "r.jsonl"
    assert main(["score", *inputs, "--model", "lite", "--output", str(res), "-q"]) == 0
    rows = [json.loads(line) for line in open(res)]
    page = tmp_path / "r.html"
    assert main(["report", str(res), "--output", str(page)]) == 0
    text = page.read_text()
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -r["score"])
    shown = [float(v) for v in re.findall(r'data-score="([0-9.]+)"', text)]
    np.testing.assert_allclose(shown, [r["score"] for r in ok], atol=1e-4)
    assert text.count('src="data:image/jpeg;base64,') == len(ok)
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    counts = [int(c) for c in re.findall(r"<title>[0-9.]+-[0-9.]+: (\d+)</title>", text)]
    assert sum(counts) == len(ok) and len(counts) == 18
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) >= 3
    for r in bad:
        assert html.escape(r["error"]) in text and html.escape(r["status"]) in text
    # the same page from the CSV and the Parquet forms of the results
    for ext in (".csv", ".parquet"):
        other = tmp_path / f"r{ext}"
        assert main(["score", *inputs, "--model", "lite", "--output", str(other), "-q"]) == 0
        assert main(["report", str(other), "--output", str(tmp_path / f"r{ext}.html")]) == 0
        assert re.findall(r'data-score="([0-9.]+)"', (tmp_path / f"r{ext}.html").read_text()) == \
            re.findall(r'data-score="([0-9.]+)"', text)


def test_report_attribute_columns_and_bad_input(tmp_path, capsys):
    from photocritic.report import attribute_columns, read_results

    res = tmp_path / "a.csv"
    res.write_text("path,score,status,error,cached,light,colour,light_description\n"
                   "x.jpg,6.5,ok,,False,7.0,3.0,bright\n"
                   "y.jpg,,corrupt,y.jpg: truncated,False,,,\n")
    rows = read_results(res)
    assert attribute_columns(rows) == ["light", "colour"]
    assert main(["report", str(res), "--output", str(tmp_path / "a.html")]) == 0
    text = (tmp_path / "a.html").read_text()
    assert 'class="aname">light' in text and 'class="bar low"' in text and "no preview" in text
    (tmp_path / "bad.jsonl").write_text('{"path": "a.jpg", "score": 5}\nnot json\n')
    capsys.readouterr()
    assert main(["report", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "b.html")]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "none.csv"), "--output", str(tmp_path / "c.html")]) == 2
