"""The deterministic knowledge base and the token-like splitter."""

from __future__ import annotations

from vastar_fast.simulator.answers import answer_for, count_tokens, tokenize, truncate_tokens


def test_capital_of_france_mentions_paris() -> None:
    assert answer_for("What is the capital of France?") == "The capital of France is Paris."


def test_topics_have_specific_answers() -> None:
    assert "Guido van Rossum" in answer_for("What is Python?")
    assert "superset of JavaScript" in answer_for("What is TypeScript?")
    assert "V8" in answer_for("Tell me about Node.js")
    assert "await" in answer_for("How does async/await work?")


def test_quantum_answer_is_long() -> None:
    text = answer_for("Explain quantum computing in simple terms.")
    assert "qubit" in text
    assert len(text.split()) >= 250


def test_unknown_prompts_are_deterministic_and_distinct() -> None:
    a1 = answer_for("How do I paint a fence?")
    a2 = answer_for("How do I paint a fence?")
    b = answer_for("Summarise the history of bicycles.")
    assert a1 == a2
    assert a1 != b
    assert len(a1.split()) > 20
    # Case and whitespace differences do not change the answer.
    assert answer_for("  how do I PAINT a fence? ") == a1


def test_tokenize_roundtrip_and_shape() -> None:
    text = "Hello, world! It's  2 o'clock.\n\nNew paragraph "
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert tokens[:4] == ["Hello", ",", " world", "!"]
    assert " It's" in tokens
    assert count_tokens(text) == len(tokens)


def test_truncate_tokens() -> None:
    tokens = tokenize("The capital of France is Paris.")
    assert truncate_tokens(tokens, 3) == (["The", " capital", " of"], True)
    assert truncate_tokens(tokens, 100) == (tokens, False)
    assert truncate_tokens(tokens, None) == (tokens, False)
