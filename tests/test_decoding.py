import numpy as np

from speechrnn.decoding import greedy_batch, greedy_decode, greedy_ids
from speechrnn.text import Alphabet


def one_hot(ids, vocab=29):
    lp = np.full((len(ids), vocab), -10.0, np.float32)
    lp[np.arange(len(ids)), ids] = 0.0
    return lp


def test_greedy_merges_repeats_and_drops_blanks():
    a = Alphabet()
    h, e, l, o = (a.encode(c)[0] for c in "helo")  # noqa: E741
    frames = [0, h, h, 0, e, l, l, 0, l, o, o, 0]
    assert greedy_ids(one_hot(frames)) == [h, e, l, l, o]
    assert greedy_decode(one_hot(frames), a) == "hello"
    assert greedy_decode(one_hot([0, 0, 0]), a) == ""
    assert greedy_decode(np.zeros((0, 29), np.float32), a) == ""


def test_greedy_batch_reads_only_valid_frames():
    a = Alphabet()
    x = a.encode("x")[0]
    batch = np.stack([one_hot([x, 0, 0, x]), one_hot([x, 0, x, x])])
    assert greedy_batch(batch, [4, 2], a) == ["xx", "x"]
    space = a.encode(" ")[0]
    assert greedy_decode(one_hot([space, x, space, space, x, space]), a) == "x x"
