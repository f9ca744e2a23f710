"""Final answers of math completions, GSM8K-style: `#### N`, else the last `\\boxed{N}`, else
the last number; compared as numbers (commas, `$`, trailing `.0` and `%` do not matter).

MATH's answers are often symbolic (\\frac{\\sqrt{3}}{2}, (1, 2), x^2 + 1): `is_equivalent`
grades them as MATH graders do, by mathematical equivalence of the reference's last \\boxed{}
and the completion's final answer, with Hugging Face's Math-Verify (LaTeX parsed to sympy).
The numeric match alone would also be wrong the other way: it reads \\boxed{\\sqrt{2}} as 2."""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
HASHES = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
ANY_NUMBER = re.compile(_NUMBER)
FRAC = re.compile(r"\\d?frac\{(-?\d+)\}\{(\d+)\}")


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...}, nested braces included."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def extract_answer(text: str) -> str | None:
    """The completion's final answer as a string, or None when there is none."""
    match = HASHES.search(text)
    if match:
        return match.group(1)
    boxed = last_boxed(text)
    if boxed is not None:
        boxed = FRAC.sub(r"\1/\2", boxed)
        inner = ANY_NUMBER.findall(boxed)
        return inner[-1] if inner else boxed.strip()
    numbers = ANY_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def to_number(answer: str | None) -> Fraction | None:
    if answer is None:
        return None
    cleaned = answer.replace(",", "").replace("$", "").rstrip("%").strip().rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def is_equivalent(completion: str, reference: str) -> bool:
    """MATH grading: symbolic equivalence (Math-Verify) of the completion's final answer with
    the reference's last \\boxed{} (or the whole reference)."""
    from math_verify import parse, verify

    boxed = last_boxed(reference)
    gold = parse(f"${boxed}$" if boxed is not None else reference)
    predicted = parse(completion)
    return bool(gold and predicted and verify(gold, predicted))


def is_correct(completion: str, reference: str) -> bool:
    """Exact numeric match between the completion's answer and the reference answer."""
    got = to_number(extract_answer(completion))
    want = to_number(extract_answer(reference) if "####" in reference or "boxed" in reference
                     else reference)
    return got is not None and got == want
