"""Distillation prompts, parsing, provenance and the split (scripted teacher)."""

import pytest

from coursegpt.distill import DistillConfig, distill_questions, parse_questions, split_qa
from coursegpt.seeds import SEED_QUESTIONS
from coursegpt.textbook import Paragraph, embedded_paragraphs, load_textbook


def test_parse_questions_on_messy_output():
  text = """Here are some questions:
1. What is a list?
2) "Why are tuples immutable?"
- How does slicing work?
Q4: Is this fine
5. What does the `del` statement remove from a"""
  assert parse_questions(text) == ["What is a list?", "Why are tuples immutable?",
                                   "How does slicing work?"]


def test_in_context_examples_expansion_and_provenance(scripted):
  paragraphs = [Paragraph("t#0", "About lists."), Paragraph("t#1", "About dicts.")]
  counter = iter(range(1000))

  def script(messages, params):
    n = next(counter)
    return f"1. Unique question number {n} alpha?\n2. Different query {n} beta gamma delta?"
  teacher = scripted(script)
  config = DistillConfig(expansion_rounds=2, seed_examples=6, generated_examples=2,
                         style_examples=3)
  result = distill_questions(paragraphs, [teacher], config, seed=0)
  assert len(teacher.requests) == 2 * (1 + 2)
  first, expand1, expand2, second = (teacher.requests[i][0] for i in range(4))
  examples = [l[2:] for l in first[0]["content"].splitlines() if l.startswith("- ")]
  assert len(examples) == 6 and set(examples) <= set(SEED_QUESTIONS)
  assert "About lists." in first[-1]["content"]
  # Expansion: the paragraph's questions so far as content, 3 seed questions as style.
  style = [l[2:] for l in expand1[0]["content"].splitlines() if l.startswith("- ")]
  assert len(style) == 3 and set(style) <= set(SEED_QUESTIONS)
  assert expand1[-1]["content"].count("?") == 2 and expand2[-1]["content"].count("?") == 4
  # The second paragraph's prompt has 6 seeds + 2 previously generated questions.
  examples = [l[2:] for l in second[0]["content"].splitlines() if l.startswith("- ")]
  assert len(examples) == 8
  assert len(set(examples[6:]) - set(SEED_QUESTIONS)) == 2
  assert result.generated == 12 and len(result.questions) + len(result.removed) == 12
  stages = [(q["paragraph_id"], q["stage"], q["round"]) for q in result.questions[:6]]
  assert stages == [("t#0", "generate", 0)] * 2 + [("t#0", "expand", 1)] * 2 + \
      [("t#0", "expand", 2)] * 2
  assert result.questions[0]["teacher"] == "scripted/script"


def test_split_and_its_errors():
  records = [{"question": str(i)} for i in range(10)]
  train, val, test = split_qa(records, 2, 3, seed=1)
  assert (len(train), len(val), len(test)) == (5, 2, 3)
  assert sorted(r["question"] for r in train + val + test) == [str(i) for i in range(10)]
  with pytest.raises(ValueError, match="non-empty training set"):
    split_qa(records, 5, 5)


def test_embedded_textbook_is_prose_paragraphs(tmp_path):
  paragraphs = embedded_paragraphs()
  assert len(paragraphs) > 100
  assert all(40 <= len(p.text.split()) <= 220 and "+--" not in p.text for p in paragraphs)
  _, source = load_textbook("embedded")
  assert source.describe() == "embedded:pydoc_data.topics"
  book = tmp_path / "book.txt"
  book.write_text("Title\n\n" + " ".join(["word"] * 50) + "\n\nshort\n")
  loaded, source = load_textbook(str(book))
  assert [p.id for p in loaded] == ["book#0"] and source.origin == "explicit"
  with pytest.raises(FileNotFoundError):
    load_textbook(str(tmp_path / "missing.txt"))


def test_parse_questions_small_teacher_habits():
  text = """Here are four new questions:
**First question**
Question: What happens to objects created through a mutable variable?
1. Why does the definition work as a verb in the sentence "The definition works."
2. **Q2:** How is a tuple hashed.
3. The passage says tuples are immutable.
4. How does the apostrophe in the definition of"""
  assert parse_questions(text) == [
      "What happens to objects created through a mutable variable?",
      'Why does the definition work as a verb in the sentence "The definition works."',
      "How is a tuple hashed."]
