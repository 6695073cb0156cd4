"""The shape of Anthropic's Messages requests (`/v1/messages` and its `count_tokens`), as the
gateway accepts them. Content blocks and image sources of other types are let through here:
the translation to OpenAI's chat refuses those it cannot carry, by name."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field
from typing_extensions import NotRequired

from moneta.application.schema import JSONObject, NonEmptyStr, Open, PositiveInt, tagged, tagged_or_other


class OtherType(Open):
    type: str


class TextBlock(Open):
    type: Literal["text"]
    text: str


class Base64Source(Open):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Open):
    type: Literal["url"]
    url: str


ImageSource = tagged_or_other({"base64": Base64Source, "url": URLSource}, OtherType)


class ImageBlock(Open):
    type: Literal["image"]
    source: ImageSource


_RESULT_BLOCKS = {"text": TextBlock, "image": ImageBlock}
ResultBlock = tagged_or_other(_RESULT_BLOCKS, OtherType)


class ToolResultBlock(Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: NotRequired[Union[str, list[ResultBlock], None]]
    is_error: NotRequired[Optional[bool]]


class ToolUseBlock(Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JSONObject


class ThinkingBlock(Open):
    type: Literal["thinking"]
    thinking: str
    signature: NotRequired[str]


class RedactedThinkingBlock(Open):
    type: Literal["redacted_thinking"]
    data: str


Block = tagged_or_other({**_RESULT_BLOCKS, "tool_result": ToolResultBlock, "tool_use": ToolUseBlock,
                         "thinking": ThinkingBlock, "redacted_thinking": RedactedThinkingBlock}, OtherType)


class Message(Open):
    role: Literal["user", "assistant"]
    content: Union[str, list[Block]]


class Metadata(Open):
    user_id: NotRequired[Optional[str]]


class Thinking(Open):
    type: str
    budget_tokens: NotRequired[Optional[Annotated[int, Field(ge=0)]]]


class Tool(Open):
    name: NonEmptyStr
    type: NotRequired[Optional[str]]
    description: NotRequired[Optional[str]]
    input_schema: NotRequired[Optional[JSONObject]]


class NamedChoice(Open):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: NotRequired[Optional[bool]]


class Choice(Open):
    type: Literal["auto", "any", "none"]
    disable_parallel_tool_use: NotRequired[Optional[bool]]


ToolChoice = tagged(NamedChoice, Choice)


class _Messages(Open):
    model: NonEmptyStr
    messages: Annotated[list[Message], Field(min_length=1)]
    system: NotRequired[Union[str, list[TextBlock], None]]
    metadata: NotRequired[Optional[Metadata]]
    stop_sequences: NotRequired[Optional[list[str]]]
    stream: NotRequired[Optional[bool]]
    temperature: NotRequired[Optional[Annotated[float, Field(ge=0, le=2)]]]
    top_p: NotRequired[Optional[float]]
    top_k: NotRequired[Optional[Annotated[int, Field(ge=0)]]]
    thinking: NotRequired[Optional[Thinking]]
    tools: NotRequired[Optional[list[Tool]]]
    tool_choice: NotRequired[Optional[ToolChoice]]


class MessagesRequest(_Messages):
    max_tokens: PositiveInt


class CountTokensRequest(_Messages):
    max_tokens: NotRequired[Optional[PositiveInt]]
