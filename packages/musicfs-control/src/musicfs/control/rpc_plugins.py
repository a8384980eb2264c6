"""The control RPCs about plugins and the metadata overlay (SPEC §8, FR-5.3).

A mixin of `musicfs.control.server.ControlServicer`: it uses the servicer's
``fs`` (the `MusicFS` mount) and ``plugins`` (the `PluginManager`, or None).
"""

from __future__ import annotations

from typing import Any

import grpc

from musicfs.control.v1 import control_pb2
from musicfs.core.model import OVERRIDABLE_FIELDS, TrackTags
from musicfs.core.mount.facade import MountControl, TagError, TagRefused, TagView
from musicfs.plugins.api import MetadataQuery, PluginError, PluginInfo
from musicfs.plugins.manager import PluginManager


def tag_message(shown: TagView) -> control_pb2.TagInfo:
    return control_pb2.TagInfo(
        path=shown.path,
        origin=shown.origin,
        relpath=shown.relpath,
        format=shown.format,
        own=_tag_strings(shown.own),
        overrides={k: v or "" for k, v in shown.overrides.items()},
        effective=_tag_strings(shown.effective),
        overlaid=shown.overlaid,
        audio_id=shown.audio_id or "",
        plays=shown.plays,
        last_played=shown.last_played or 0.0,
        moved_from=list(shown.moved_from),
        sources=dict(shown.sources),
        rating=-1 if shown.rating is None else shown.rating,
    )


def _tag_strings(tags: TrackTags) -> dict[str, str]:
    values = {name: getattr(tags, name) for name in OVERRIDABLE_FIELDS}
    values["compilation"] = values["compilation"] or None
    return {
        k: str(int(v) if isinstance(v, bool) else v) for k, v in values.items() if v is not None
    }


class PluginRPCs:
    """Plugin list/load/unload/reload, and tag show/set/lookup."""

    fs: MountControl
    plugins: PluginManager | None

    # -- plugins -----------------------------------------------------------------------

    def ListPlugins(
        self, request: control_pb2.ListPluginsRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        return self._plugin_list([])

    def LoadPlugin(
        self, request: control_pb2.LoadPluginRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        if not request.path:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name the plugin file or folder")
        infos = self._plugin_call(context, lambda m: m.load_path(request.path))
        return self._plugin_list(infos)

    def UnloadPlugin(
        self, request: control_pb2.UnloadPluginRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        infos = self._plugin_call(context, lambda m: [m.unload(request.name)])
        return self._plugin_list(infos)

    def ReloadPlugin(
        self, request: control_pb2.ReloadPluginRequest, context: grpc.ServicerContext
    ) -> control_pb2.PluginList:
        if request.name:
            infos = self._plugin_call(context, lambda m: m.reload(request.name))
        else:
            infos = self._plugin_call(context, lambda m: m.reload_all())
        return self._plugin_list(infos)

    def _plugin_call(self, context: grpc.ServicerContext, call: Any) -> list[PluginInfo]:
        """Run a plugin manager change; then let the mount catch up with it."""
        if self.plugins is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this daemon runs without plugins")
        try:
            infos: list[PluginInfo] = call(self.plugins)
        except PluginError as exc:
            code = grpc.StatusCode.NOT_FOUND if "no plugin named" in str(exc) else (
                grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
            context.abort(code, str(exc))
        formats = {e for i in infos for e in i.details.get("extensions", "").split(",") if e}
        self.fs.formats_changed(formats)
        for origin_type in {i.details["origin_type"] for i in infos if "origin_type" in i.details}:
            self.fs.rebuild_origins(origin_type)
        return infos

    def _plugin_list(self, changed: list[PluginInfo]) -> control_pb2.PluginList:
        manager = self.plugins
        infos = manager.infos() if manager is not None else []
        failures = manager.failures if manager is not None else ()
        return control_pb2.PluginList(
            plugins=[
                control_pb2.PluginInfo(
                    name=i.name,
                    version=i.version,
                    api_version=i.api_version,
                    kinds=list(i.kinds),
                    host=i.host,
                    source=i.source,
                    details=dict(i.details),
                )
                for i in infos
            ],
            failures=[
                control_pb2.PluginFailure(source=f.source, host=f.host, error=f.error)
                for f in failures
            ],
            changed=[i.name for i in changed],
        )

    # -- the metadata overlay -------------------------------------------------------------

    def GetTags(
        self, request: control_pb2.GetTagsRequest, context: grpc.ServicerContext
    ) -> control_pb2.TagInfo:
        try:
            return tag_message(self.fs.tag_view(request.path))
        except TagError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    def SetTags(
        self, request: control_pb2.SetTagsRequest, context: grpc.ServicerContext
    ) -> control_pb2.TagInfo:
        if not request.set and not request.clear:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give FIELD=VALUE pairs or fields to clear"
            )
        assignments = {k: (v or None) for k, v in request.set.items()}
        try:
            shown = self.fs.set_tags(
                request.path, assignments, list(request.clear), request.source or "user"
            )
            return tag_message(shown)
        except TagRefused as exc:  # the tags cannot be served: nothing was changed
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except TagError as exc:
            code = grpc.StatusCode.NOT_FOUND if "no such file" in str(exc) else (
                grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
            context.abort(code, str(exc))

    def LookupTags(
        self, request: control_pb2.LookupTagsRequest, context: grpc.ServicerContext
    ) -> control_pb2.LookupTagsResponse:
        try:
            shown = self.fs.tag_view(request.path)
        except TagError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        query = MetadataQuery(shown.origin, shown.relpath, shown.format, shown.own)
        response = control_pb2.LookupTagsResponse()
        answers: list[tuple[str, dict[str, str]]] = []
        for plugin in self.plugins.metadata_plugins() if self.plugins is not None else []:
            try:
                found = plugin.lookup(query)
            except Exception as exc:  # plugin code
                response.errors.append(f"{plugin.name}: {type(exc).__name__}: {exc}")
                continue
            fields = {k: str(v) for k, v in (found.fields if found else {}).items()
                      if k in OVERRIDABLE_FIELDS}  # fmt: skip
            if found is None or not fields:
                continue
            answers.append((plugin.name, fields))
            response.proposals.append(control_pb2.MetadataProposal(
                plugin=plugin.name, fields=fields, source=found.source,
                confidence=found.confidence,
            ))  # fmt: skip
        if request.apply and answers:
            name, fields = answers[0]
            try:
                applied = self.fs.set_tags(request.path, dict(fields), source=name)
            except TagError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {exc}")
            response.tags.CopyFrom(tag_message(applied))
        return response
