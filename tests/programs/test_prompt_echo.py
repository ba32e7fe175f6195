"""The echo test: a proposal that hands back the optimizer's own prompt is told apart from a persona."""

from __future__ import annotations

from gepa.strategies.instruction_proposal import InstructionProposalSignature

from persona_agent.programs import init_persona
from persona_agent.programs.prompt_echo import RUN, PromptEcho, aligner_prompt, copro_prompt, gepa_reflection_prompt
from persona_agent.signatures.alignment import PersonaUpdate

PERSONA = (
    "## User profile\nWatches classic science fiction and files most films under sci-fi or classic.\n\n"
    "## Agent instructions\nSearch memory for similar films before you answer; give one tag."
)


def test_a_persona_is_not_an_echo():
    initial = init_persona("alice", "Likes opera.").text  # the default agent instructions included
    for echo in (gepa_reflection_prompt(), copro_prompt(), aligner_prompt()):
        assert echo.find(PERSONA) is None and echo.find(initial) is None


def test_gepa_prompt_filled_in_and_handed_back_is_an_echo():
    prompt = InstructionProposalSignature.default_prompt_template
    handed_back = prompt.replace("<curr_param>", PERSONA).replace("<side_info>", "# Example 1\n...")
    note = gepa_reflection_prompt().note(handed_back)
    assert note == "echoes GEPA's reflection prompt ('i provided an assistant with the following instructions')"


def test_gepa_examples_block_handed_back_is_an_echo():
    """Only the examples gepa renders into `<side_info>`, copied back: no run of the template, but its headings."""
    record = {
        "Inputs": {"article": "A museum reopens its opera wing."},
        "Generated Outputs": {"category": "politics"},
        "Feedback": "The user actually wanted {'category': 'culture & arts'}. matches (metric)",
    }
    rendered = InstructionProposalSignature.prompt_renderer(
        {"current_instruction_doc": PERSONA, "dataset_with_feedback": [record]}
    )
    block = rendered[rendered.index("# Example 1") : rendered.index("matches (metric)") + len("matches (metric)")]
    echo = gepa_reflection_prompt(tuple(record), "The user actually wanted {")
    assert gepa_reflection_prompt().find(block) == "# Example 1"  # the example heading alone is gepa's
    assert echo.find(block.replace("# Example 1\n", "")) == "## Inputs"
    feedback_only = "Likes museums. The user actually wanted {'category': 'culture & arts'}."
    assert echo.note(feedback_only) == "echoes GEPA's reflection prompt ('The user actually wanted {')"
    assert echo.find(PERSONA + "\n## Inputs and outputs\nThe user actually wanted more opera.") is None


def test_part_of_a_sentence_in_other_words_is_an_echo_only_from_eight_words():
    echo = gepa_reflection_prompt()
    seven = "Identify all niche and domain specific factual"  # seven words of the prompt
    assert echo.find(f"{PERSONA}\n{seven} knowledge about films.") is None
    assert (
        echo.find(f"{PERSONA}\n{seven} information about the task.")
        == "identify all niche and domain specific factual information"
    )


def test_copro_attempt_labels_are_an_echo():
    handed_back = "[3] «Prefix #1: Tag:»\n[4] «Resulting Score #1: 33.33»\n[5] «Instruction #2: Write a script.»"
    assert copro_prompt().note(handed_back) == "echoes COPRO's prompt ('Prefix #1:')"
    assert copro_prompt().find("You are an instruction optimizer for large language models.") is not None


def test_a_run_never_spans_a_template_variable():
    echo = PromptEcho("a prompt", ("one two three four five", "six seven eight nine ten"))
    assert RUN == 8
    assert echo.find("one two three four five six seven eight") is None  # the variable sat between five and six
    assert (
        PromptEcho("a prompt", ("one two three four five six seven eight",)).find(
            "One, two; three four five six seven EIGHT!"
        )
        == "one two three four five six seven eight"
    )


def test_persona_aligner_update_prompt_handed_back_is_an_echo():
    handed_back = f"{PersonaUpdate.instructions}\n\n{PERSONA}"
    assert aligner_prompt().note(handed_back) == (
        "echoes PersonaAligner's prompt ('rewrite the persona by applying the proposed edits')"
    )
    losses = f"{PERSONA}\n1. request: Alien (1979)\n   agent said: action\n   user wanted: sci-fi"
    assert aligner_prompt().find(losses) == "agent said:"


def test_what_the_current_persona_already_says_is_not_an_echo():
    current = f"{PERSONA}\nNote what the agent said: and what the user wanted: {PersonaUpdate.instructions}"
    assert aligner_prompt().find(current, allowed=current) is None
    assert aligner_prompt().find(current + "\nuser wanted: drama", allowed=current) is None
    new = current + "\nexplain which parts of the persona caused the mismatches and list specific edits"
    assert aligner_prompt().find(new, allowed=current) == "explain which parts of the persona caused the"
