"""Apps, environments, secrets, the client handshake and auth tokens.

Apps and named secrets are persisted (tables ``apps`` and ``secrets``), so a restarted emulator finds
them again. Environments are implicit: any name is accepted and gets a stable id; the image builder
version they report is :data:`IMAGE_BUILDER_VERSION`.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from grpclib import Status
from modal_proto import api_pb2

from .core import EmulatorState

#: Image builder version reported by every environment; it must be one the SDK supports.
IMAGE_BUILDER_VERSION = "2025.06"
DEFAULT_ENVIRONMENT = "main"
#: Lifetime of the auth tokens (JWTs) handed to clients; the SDK refreshes them half way.
AUTH_TOKEN_LIFETIME_SECS = 3600


def environment_name(name: str) -> str:
    return name or DEFAULT_ENVIRONMENT


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT: the SDK reads its ``exp`` claim, nothing checks its signature."""

    def encode(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(claims)}.emulator"


def fresh_token(subject: str) -> str:
    now = int(time.time())
    return make_jwt({"sub": subject, "iat": now, "exp": now + AUTH_TOKEN_LIFETIME_SECS})


def find_app(state: EmulatorState, app_name: str, env: str) -> dict[str, Any] | None:
    apps = state.table("apps")
    if app_name.startswith("ap-") and app_name in apps:
        return apps.get(app_name)
    for row in apps.values():
        if row["name"] == app_name and row["environment"] == env:
            return row
    return None


def secret_env(state: EmulatorState, secret_ids: list[str]) -> dict[str, str]:
    """The environment variables of the given secrets, later ones winning."""
    env: dict[str, str] = {}
    secrets = state.table("secrets")
    for secret_id in secret_ids:
        row = secrets.get(secret_id)
        if row is None:
            state.abort(Status.NOT_FOUND, f"secret {secret_id} not found")
        env.update(row["env"])
    return env


def env_from_sources(state: EmulatorState, sources: Any) -> dict[str, str]:
    """Environment variables from ``SecretSource`` messages (secret ids or inline maps)."""
    env: dict[str, str] = {}
    for source in sources:
        if source.secret_id:
            env.update(secret_env(state, [source.secret_id]))
        else:
            env.update(dict(source.env.contents))
    return env


class AppRpcs:
    """AppGetOrCreate, AppLookup, EnvironmentGetOrCreate, SecretGetOrCreate, ClientHello, AuthTokenGet."""

    state: EmulatorState

    async def ClientHello(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def AuthTokenGet(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(api_pb2.AuthTokenGetResponse(token=fresh_token("client")))

    async def EnvironmentGetOrCreate(self, stream: Any) -> None:
        request = await stream.recv_message()
        name = environment_name(request.deployment_name)
        environments = self.state.table("environments")
        row = environments.get(name)
        if row is None:
            row = {"id": self.state.new_id("en"), "name": name}
            environments.put(name, row)
        settings = api_pb2.EnvironmentSettings(image_builder_version=IMAGE_BUILDER_VERSION, webhook_suffix="modal.run")
        metadata = api_pb2.EnvironmentMetadata(name=name, settings=settings)
        await stream.send_message(api_pb2.EnvironmentGetOrCreateResponse(environment_id=row["id"], metadata=metadata))

    def _app_metadata(self, row: dict[str, Any]) -> api_pb2.AppHandleMetadata:
        return api_pb2.AppHandleMetadata(app_id=row["id"], environment_name=row["environment"], description=row["name"])

    async def AppGetOrCreate(self, stream: Any) -> None:
        request = await stream.recv_message()
        env = environment_name(request.environment_name)
        row = find_app(self.state, request.app_name, env)
        if row is None:
            if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                self.state.abort(Status.NOT_FOUND, f"App '{request.app_name}' not found in environment '{env}'")
            row = {"id": self.state.new_id("ap"), "name": request.app_name, "environment": env, "created_at": time.time()}
            self.state.table("apps").put(row["id"], row)
        await stream.send_message(
            api_pb2.AppGetOrCreateResponse(app_id=row["id"], handle_metadata=self._app_metadata(row))
        )

    async def AppLookup(self, stream: Any) -> None:
        request = await stream.recv_message()
        row = find_app(self.state, request.app_name, environment_name(request.environment_name))
        if row is None:
            self.state.abort(Status.NOT_FOUND, f"App '{request.app_name}' not found")
        await stream.send_message(api_pb2.AppLookupResponse(app_id=row["id"]))

    async def SecretGetOrCreate(self, stream: Any) -> None:
        request = await stream.recv_message()
        secrets = self.state.table("secrets")
        env = environment_name(request.environment_name)
        creation = request.object_creation_type
        env_dict = dict(request.env_dict)
        row: dict[str, Any] | None = None
        if request.deployment_name:
            row = next(
                (r for r in secrets.values() if r.get("name") == request.deployment_name and r["environment"] == env),
                None,
            )
            if row is not None and creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                self.state.abort(Status.ALREADY_EXISTS, f"Secret '{request.deployment_name}' already exists")
            if row is not None and creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS:
                row["env"] = env_dict
                secrets.put(row["id"], row)
            if row is None and creation == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
                self.state.abort(Status.NOT_FOUND, f"Secret '{request.deployment_name}' not found")
        if row is None:
            row = {
                "id": self.state.new_id("st"),
                "name": request.deployment_name,
                "environment": env,
                "env": env_dict,
                "created_at": time.time(),
            }
            secrets.put(row["id"], row)
        missing = [key for key in request.required_keys if key not in row["env"]]
        if missing:
            self.state.abort(Status.NOT_FOUND, f"Secret is missing key(s): {', '.join(missing)}")
        metadata = api_pb2.SecretMetadata(name=row["name"], keys=sorted(row["env"]), environment_name=env)
        await stream.send_message(api_pb2.SecretGetOrCreateResponse(secret_id=row["id"], metadata=metadata))
