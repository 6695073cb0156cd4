"""The shapes of OpenAI's request bodies (chat, text completions, embeddings, transcription
form fields) and of LiteLLM's `/utils/token_counter`, as the gateway accepts them.

Optional parameters may be null, as OpenAI allows. Members not declared here pass through to
the provider (see application.schema).
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field
from typing_extensions import NotRequired

from moneta.application.schema import JSONObject, NonEmptyStr, Open, OpenText, PositiveInt, tagged

Number = float  # strict: an integer is a number too, a boolean is not


class TextPart(Open):
    type: Literal["text"]
    text: str


class ImageURL(Open):
    url: str
    detail: NotRequired[Optional[str]]


class ImagePart(Open):
    type: Literal["image_url"]
    image_url: Union[ImageURL, str]


class InputAudio(Open):
    data: str
    format: str


class AudioPart(Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileData(Open):
    file_data: NotRequired[str]
    file_id: NotRequired[str]
    filename: NotRequired[str]


class FilePart(Open):
    type: Literal["file"]
    file: FileData


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


ContentPart = tagged(TextPart, ImagePart, AudioPart, FilePart, RefusalPart)


class FunctionCall(Open):
    name: str
    arguments: Union[str, JSONObject]


class ToolCall(Open):
    id: str
    type: NotRequired[Literal["function"]]
    function: FunctionCall


class ChatMessage(Open):
    role: Literal["system", "user", "assistant", "tool", "function", "developer"]
    content: NotRequired[Union[str, list[ContentPart], None]]
    name: NotRequired[Optional[str]]
    tool_calls: NotRequired[Optional[list[ToolCall]]]
    tool_call_id: NotRequired[Optional[str]]
    function_call: NotRequired[Optional[FunctionCall]]
    refusal: NotRequired[Optional[str]]
    thinking_blocks: NotRequired[Optional[list[JSONObject]]]


class FunctionDefinition(Open):
    name: NonEmptyStr
    description: NotRequired[Optional[str]]
    parameters: NotRequired[Optional[JSONObject]]
    strict: NotRequired[Optional[bool]]


class FunctionTool(Open):
    type: Literal["function"]
    function: FunctionDefinition


class CustomDefinition(Open):
    name: NonEmptyStr
    description: NotRequired[Optional[str]]
    format: NotRequired[Optional[JSONObject]]


class CustomTool(Open):
    type: Literal["custom"]
    custom: CustomDefinition


Tool = tagged(FunctionTool, CustomTool)


class ToolName(Open):
    name: str


class FunctionChoice(Open):
    type: Literal["function"]
    function: ToolName


class CustomChoice(Open):
    type: Literal["custom"]
    custom: ToolName


class AllowedToolsChoice(Open):
    type: Literal["allowed_tools"]
    allowed_tools: JSONObject


ToolChoice = Union[Literal["none", "auto", "required"], tagged(FunctionChoice, CustomChoice, AllowedToolsChoice)]


class JSONSchemaFormat(Open):
    name: str
    schema: NotRequired[Optional[JSONObject]]
    description: NotRequired[Optional[str]]
    strict: NotRequired[Optional[bool]]


class PlainFormat(Open):
    type: Literal["text", "json_object"]


class SchemaFormat(Open):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = tagged(PlainFormat, SchemaFormat)


class StreamOptions(Open):
    include_usage: NotRequired[Optional[bool]]


class CacheControls(Open):
    """LiteLLM's per-request cache controls (the gateway's own: never sent to a provider)."""

    no_cache: NotRequired[Annotated[Optional[bool], Field(alias="no-cache")]]
    no_store: NotRequired[Annotated[Optional[bool], Field(alias="no-store")]]
    ttl: NotRequired[Annotated[Optional[Number], Field(alias="ttl", gt=0)]]
    s_maxage: NotRequired[Annotated[Optional[Number], Field(alias="s-maxage", ge=0)]]


class _Sampling(Open):
    """What chat and text completions share."""

    model: NonEmptyStr
    stream: NotRequired[Optional[bool]]
    stream_options: NotRequired[Optional[StreamOptions]]
    temperature: NotRequired[Optional[Annotated[Number, Field(ge=0, le=2)]]]
    top_p: NotRequired[Optional[Number]]
    n: NotRequired[Optional[Annotated[int, Field(ge=1, le=128)]]]
    max_tokens: NotRequired[Optional[PositiveInt]]
    presence_penalty: NotRequired[Optional[Number]]
    frequency_penalty: NotRequired[Optional[Number]]
    seed: NotRequired[Optional[int]]
    stop: NotRequired[Union[str, list[str], None]]
    logit_bias: NotRequired[Optional[dict[str, Number]]]
    user: NotRequired[Optional[str]]
    metadata: NotRequired[Optional[JSONObject]]
    drop_params: NotRequired[Optional[bool]]
    cache: NotRequired[Optional[CacheControls]]


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: NotRequired[Optional[PositiveInt]]
    tools: NotRequired[Optional[list[Tool]]]
    tool_choice: NotRequired[Optional[ToolChoice]]
    parallel_tool_calls: NotRequired[Optional[bool]]
    functions: NotRequired[Optional[list[FunctionDefinition]]]
    function_call: NotRequired[Union[Literal["none", "auto"], ToolName, None]]
    response_format: NotRequired[Optional[ResponseFormat]]
    logprobs: NotRequired[Optional[bool]]
    top_logprobs: NotRequired[Optional[Annotated[int, Field(ge=0, le=20)]]]
    reasoning_effort: NotRequired[Optional[str]]
    modalities: NotRequired[Optional[list[str]]]
    service_tier: NotRequired[Optional[str]]
    store: NotRequired[Optional[bool]]
    verbosity: NotRequired[Optional[str]]
    prompt_cache_key: NotRequired[Optional[str]]
    safety_identifier: NotRequired[Optional[str]]
    audio: NotRequired[Optional[JSONObject]]
    prediction: NotRequired[Optional[JSONObject]]
    web_search_options: NotRequired[Optional[JSONObject]]
    thinking: NotRequired[Optional[JSONObject]]


TokenIds = list[int]
Prompt = Union[NonEmptyStr, Annotated[list[Union[str, int, TokenIds]], Field(min_length=1)]]


class TextCompletionRequest(_Sampling):
    prompt: Prompt
    echo: NotRequired[Optional[bool]]
    logprobs: NotRequired[Optional[Annotated[int, Field(ge=0, le=5)]]]
    best_of: NotRequired[Optional[PositiveInt]]
    suffix: NotRequired[Optional[str]]


class EmbeddingRequest(Open):
    model: NonEmptyStr
    input: Prompt
    encoding_format: NotRequired[Optional[Literal["float", "base64"]]]
    # OpenAI's largest model has 3,072; the bound keeps a provider from building huge vectors.
    dimensions: NotRequired[Optional[Annotated[int, Field(ge=1, le=65_536)]]]
    user: NotRequired[Optional[str]]
    cache: NotRequired[Optional[CacheControls]]


class TokenCountRequest(Open):
    model: NonEmptyStr
    messages: NotRequired[Optional[list[ChatMessage]]]
    prompt: NotRequired[Union[str, list[str], None]]


class TranscriptionForm(OpenText):
    """The text fields of a transcription's multipart form (the file travels apart)."""

    model: NonEmptyStr
    language: NotRequired[str]
    prompt: NotRequired[str]
    response_format: NotRequired[Literal["json", "text", "srt", "verbose_json", "vtt"]]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=1)]]
    timestamp_granularities: NotRequired[Annotated[Literal["word", "segment"],
                                                   Field(alias="timestamp_granularities[]")]]
