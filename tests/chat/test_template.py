from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from magistral.chat.template import ChatTemplate
from magistral.model.load import LoadedModel


def test_gguf_template_renders_chatml_with_default_system(loaded: LoadedModel) -> None:
    template = ChatTemplate(loaded.metadata["tokenizer.chat_template"])
    text = template.render([{"role": "user", "content": "Hi"}])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    own_system = template.render([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hi"}])
    assert own_system.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "SmolLM" not in own_system


def test_templates_run_sandboxed() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SecurityError):
        template.render([{"role": "user", "content": "x"}])
