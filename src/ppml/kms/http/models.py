"""Request and response models of the native API (they document it in OpenAPI) and the body helpers."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, Field, ValidationError

from ppml.kms.http.errors import MalformedBody
from ppml.kms.types import KeyDescription
from ppml.kms.wire import b64decode, b64encode

__all__ = [
    "CiphertextRequest", "CiphertextResponse", "CreateKeyRequest", "CredentialsResponse", "DataKeyResponse",
    "GenerateDataKeyRequest", "KeyResponse", "PlaintextRequest", "PlaintextResponse", "ScheduleDeletionRequest",
    "b64decode", "b64encode", "json_body", "key_json", "request_body",
]


class CreateKeyRequest(BaseModel):
    keyspec: str = Field("EH_AES_GCM_256", description="EH_AES_GCM_128, EH_AES_GCM_192 or EH_AES_GCM_256")
    description: str = ""
    release_policy: dict[str, Any] | None = Field(None, description="attestation release policy")


class KeyResponse(BaseModel):
    key_id: str
    keyspec: str
    origin: str
    description: str
    state: str
    current_version: int
    created: str
    deletion_time: str | None
    release_policy: dict[str, Any] | None


class GenerateDataKeyRequest(BaseModel):
    length: int = Field(32, ge=1, le=1024)
    aad: str = Field("", description="base64 associated data, needed again to unwrap")
    include_plaintext: bool = True


class DataKeyResponse(BaseModel):
    ciphertext: str
    plaintext: str | None = None


class CiphertextRequest(BaseModel):
    ciphertext: str
    aad: str = ""


class PlaintextRequest(BaseModel):
    plaintext: str
    aad: str = ""


class PlaintextResponse(BaseModel):
    plaintext: str


class CiphertextResponse(BaseModel):
    ciphertext: str


class ScheduleDeletionRequest(BaseModel):
    days: int = Field(7, ge=0, le=365)


class CredentialsResponse(BaseModel):
    appid: str
    apikey: str


def key_json(key: KeyDescription) -> dict[str, Any]:
    return {
        "key_id": key.key_id, "keyspec": key.keyspec, "origin": key.origin, "description": key.description,
        "state": key.state, "current_version": key.current_version, "created": key.created.isoformat(),
        "deletion_time": key.deletion_time.isoformat() if key.deletion_time else None,
        "release_policy": key.release_policy,
    }


ModelT = TypeVar("ModelT", bound=BaseModel)


async def json_body(request: Request, model: type[ModelT], *, optional: bool = False) -> ModelT:
    """The JSON body validated by ``model`` (an empty body is the defaults when ``optional``)."""
    raw = await request.body()
    if optional and not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise MalformedBody([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None


def request_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI for a body the handler reads itself."""
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}
