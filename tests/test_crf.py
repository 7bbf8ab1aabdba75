"""Linear-chain CRF: likelihood and Viterbi against brute-force enumeration, BIO constraints."""

import itertools

import pytest
import torch

from s2s_tasks.nn.crf import LinearChainCRF, bio_allowed_transitions

pytestmark = pytest.mark.usefixtures("single_thread")

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def is_valid_bio(tags):
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


@torch.no_grad()
def brute_force(crf, emissions, length):
    """All tag sequences of one row: (sequence, score) for the allowed ones."""
    t = crf.num_tags
    allowed = crf.allowed
    out = []
    for seq in itertools.product(range(t), repeat=length):
        ok = bool(allowed[t, seq[0]]) and bool(allowed[seq[-1], t + 1])
        ok = ok and all(bool(allowed[a, b]) for a, b in zip(seq, seq[1:]))
        if not ok:
            continue
        score = crf.start_transitions[seq[0]] + crf.end_transitions[seq[-1]]
        score = score + sum(emissions[i, s] for i, s in enumerate(seq))
        score = score + sum(crf.transitions[a, b] for a, b in zip(seq, seq[1:]))
        out.append((list(seq), float(score)))
    return out


def make_crf(constrained: bool, seed: int = 0):
    torch.manual_seed(seed)
    crf = LinearChainCRF(len(TAGS), bio_allowed_transitions(TAGS) if constrained else None)
    with torch.no_grad():  # larger than the init so that the transitions matter
        for p in crf.parameters():
            p.normal_(0, 1.0)
    return crf


def test_bio_allowed_transitions():
    allowed = bio_allowed_transitions(TAGS)
    ix = {name: i for i, name in enumerate(TAGS)}
    start, end = len(TAGS), len(TAGS) + 1
    assert allowed.shape == (7, 7) and allowed.dtype == torch.bool
    assert not allowed[ix["O"], ix["I-PER"]]
    assert not allowed[ix["B-LOC"], ix["I-PER"]] and not allowed[ix["I-LOC"], ix["I-PER"]]
    assert not allowed[start, ix["I-PER"]] and not allowed[start, ix["I-LOC"]]
    assert allowed[ix["B-PER"], ix["I-PER"]] and allowed[ix["I-PER"], ix["I-PER"]]
    for name in TAGS:
        assert allowed[ix[name], end]  # any tag may end a sentence
        for target in ("O", "B-PER", "B-LOC"):
            assert allowed[ix[name], ix[target]]
    assert allowed[start, ix["O"]] and allowed[start, ix["B-LOC"]]
    with pytest.raises(ValueError, match="not a BIO tag"):
        bio_allowed_transitions(["O", "PER"])


@pytest.mark.parametrize("constrained", [False, True])
def test_nll_and_viterbi_match_brute_force(constrained):
    crf = make_crf(constrained)
    torch.manual_seed(1)
    lengths = [4, 2, 1, 3]
    emissions = torch.randn(len(lengths), 4, len(TAGS)) * 2
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    # a valid gold sequence per row (padding values must be ignored)
    gold = torch.tensor([[1, 2, 0, 3], [3, 4, -100, -100], [0, -100, -100, -100], [1, 3, 4, 0]])
    nll = crf.nll(emissions, gold, mask)
    decoded = crf.viterbi_decode(emissions, mask)
    assert nll.shape == (4,)
    for b, n in enumerate(lengths):
        table = brute_force(crf, emissions[b], n)
        log_z = torch.logsumexp(torch.tensor([s for _, s in table]), 0)
        gold_score = dict((tuple(seq), s) for seq, s in table)[tuple(gold[b, :n].tolist())]
        assert nll[b].item() == pytest.approx(float(log_z) - gold_score, abs=1e-4)
        best_seq, best_score = max(table, key=lambda item: item[1])
        assert decoded[b] == best_seq
        assert crf.sequence_score(emissions[b : b + 1, :n], torch.tensor([best_seq]), torch.ones(1, n, dtype=torch.bool)).item() == pytest.approx(best_score, abs=1e-4)
    # the probabilities of all allowed sequences sum to one
    table = brute_force(crf, emissions[0], 4)
    seqs = torch.tensor([seq for seq, _ in table])
    nlls = crf.nll(emissions[:1].expand(len(seqs), -1, -1), seqs, torch.ones(len(seqs), 4, dtype=torch.bool))
    assert float(torch.exp(-nlls.detach()).sum()) == pytest.approx(1.0, abs=1e-4)


def test_decoding_never_yields_an_invalid_bio_transition():
    crf = make_crf(True)
    ix = {name: i for i, name in enumerate(TAGS)}
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        emissions = torch.randn(8, 7, len(TAGS), generator=generator)
        # emissions strongly favour I- tags: at the start, after O and after the other type
        emissions[..., ix["I-PER"]] += 50.0
        emissions[:, 1::2, ix["I-LOC"]] += 80.0
        lengths = torch.randint(1, 8, (8,), generator=generator)
        mask = torch.arange(7)[None, :] < lengths[:, None]
        decoded = crf.viterbi_decode(emissions, mask)
        assert [len(row) for row in decoded] == lengths.tolist()
        for row in decoded:
            assert is_valid_bio([TAGS[i] for i in row]), [TAGS[i] for i in row]
    # without the constraints the same emissions do give invalid sequences
    free = make_crf(False)
    emissions = torch.zeros(1, 3, len(TAGS))
    emissions[0, :, ix["I-PER"]] = 50.0
    assert not is_valid_bio([TAGS[i] for i in free.viterbi_decode(emissions, torch.ones(1, 3, dtype=torch.bool))[0]])


def test_gradients_empty_rows_and_invalid_gold():
    crf = make_crf(True)
    emissions = torch.randn(3, 5, len(TAGS), requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    gold = torch.tensor([[1, 2, 2, 0, 3], [0, 1, -100, -100, -100], [-100] * 5])
    nll = crf.nll(emissions, gold, mask)
    assert nll[2].item() == 0.0 and (nll[:2] > 0).all()
    nll.sum().backward()
    assert torch.isfinite(emissions.grad).all() and all(torch.isfinite(p.grad).all() for p in crf.parameters())
    assert crf.viterbi_decode(emissions, mask)[2] == []
    # a gold sequence with a forbidden transition (O -> I-PER) gets a large but finite loss
    bad = crf.nll(emissions[:1].detach(), torch.tensor([[0, 2, 0, 0, 0]]), mask[:1])
    assert torch.isfinite(bad).all() and bad.item() > 1000


def test_allowed_is_saved_and_checked():
    crf = LinearChainCRF(len(TAGS))
    assert crf.allowed.all()
    restored = LinearChainCRF(len(TAGS))
    restored.load_state_dict(make_crf(True).state_dict())
    assert torch.equal(restored.allowed, bio_allowed_transitions(TAGS))
    with pytest.raises(ValueError, match="shape"):
        crf.set_allowed(torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no tag sequence"):
        crf.set_allowed(torch.zeros(7, 7, dtype=torch.bool))
