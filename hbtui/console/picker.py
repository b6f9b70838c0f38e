"""Profile keys of the console: load (l), save (w) and save as (W), always *by name*.

The engine lists what it can load (``list_profiles``: its machine's shipped and user
profiles) and saves by name into its own user profile directory, so the console never
sends a path and never creates a directory. Loading over ``● unsaved`` edits asks first;
``w`` on a shipped profile (or one the engine does not list) asks for a new name instead
of writing a user copy that would silently hide the shipped one; a save's toast names
the file the engine wrote. A mixin of ``ConsoleApp``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hbtui.console.link import EngineLink
from hbtui.console.programs import cut
from hbtui.console.screens import ConfirmModal, EditModal, PickerModal
from hbtui.engine.client import ClientError
from hbtui.engine.protocol import ProfileEntry

_PROFILE_KEYS = tuple(ProfileEntry.__annotations__)  # a list_profiles entry: all str
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # the engine's profile names
PATH_CELL = 44  # characters of a profile's path in the picker (its start is cut)


def left_cut(s: str, n: int) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1) :]


def entries_of(res: Any) -> list[dict[str, str]]:
    """The well-formed entries of a ``list_profiles`` result (others are skipped)."""
    entries = res.get("profiles") if isinstance(res, dict) else None
    return [
        e
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and all(isinstance(e.get(k), str) for k in _PROFILE_KEYS)
    ]


def save_as_parser(entries: list[dict[str, str]]) -> Callable[[str], dict[str, Any]]:
    """The save-as modal's check: a profile name, not a shipped one, never a path."""
    shipped = {e["name"] for e in entries if e["origin"] == "shipped"}
    users = {e["name"] for e in entries if e["origin"] != "shipped"}

    def parse(text: str) -> dict[str, Any]:
        name = text.strip()
        if not name:
            raise ValueError("a profile name, e.g. my-profile")
        if "/" in name or "\\" in name or name.endswith(".toml"):
            raise ValueError(
                "a name, not a path: the engine saves user profiles in its profile directory"
            )
        if not NAME_RE.fullmatch(name):
            raise ValueError("a name of 1-64 letters, digits, _ . - (not starting with . or -)")
        if name in shipped and name not in users:
            raise ValueError(
                f"{name!r} is a shipped profile: choose another name "
                "(a user profile of that name would hide it)"
            )
        return {"name": name}

    return parse


def saved_text(name: str) -> Callable[[Any], str]:
    def text(res: Any) -> str:
        path = res.get("path") if isinstance(res, dict) else None
        where = f" to {cut(path, 120)}" if isinstance(path, str) and path else ""
        return f"✓ saved profile {name}{where}"

    return text


class ProfileActions:
    """Needs ``ConsoleApp``'s ``current_model``, ``current_link``, ``control``, ``notify``,
    ``push_screen`` and ``run_worker``."""

    current_model: Any
    current_link: Any
    control: Any
    notify: Any
    push_screen: Any
    run_worker: Any

    async def _profiles(self, link: EngineLink, what: str) -> list[dict[str, str]] | None:
        """The engine's profiles, or None (with a toast) when it cannot list them."""
        try:
            res = await link.call("list_profiles", timeout=2.0)
        except ClientError as e:  # e.g. unknown_op from an engine older than protocol 1.2
            self.notify(f"{what}: {e.message} [{e.code}]", severity="error", timeout=8)
            return None
        except Exception as e:  # noqa: BLE001 - a failed call never kills the console
            self.notify(f"{what}: {type(e).__name__}: {e}", severity="error", timeout=8)
            return None
        return entries_of(res)

    # -- load ----------------------------------------------------------------------------
    def action_load_profile(self) -> None:
        # The engine lists what it can load: its machine's profiles, not this console's.
        self.run_worker(self._pick_profile(self.current_link()), group="control")

    async def _pick_profile(self, link: EngineLink) -> None:
        entries = await self._profiles(link, "list profiles")
        if entries is None:
            return
        if not entries:
            self.notify("the engine lists no profiles", severity="warning")
            return
        opts = [
            (e["name"], f"{cut(e['name'], 40)}  [{e['origin']}]  {left_cut(e['path'], PATH_CELL)}")
            for e in entries
        ]
        hint = "Shipped and user profiles on the engine's machine."
        self.push_screen(PickerModal("Load profile", opts, hint), self._confirm_load)

    def _confirm_load(self, name: str | None) -> None:
        if not name:
            return
        if not self.current_model().dirty:
            self._load(name)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._load(name)

        question = (
            f"Loading {name!r} replaces the engine's tasks: the edits made since the last "
            "save are lost. Load it anyway? (w saves them first)"
        )
        self.push_screen(ConfirmModal("Discard unsaved edits?", question), answer)

    def _load(self, name: str) -> None:
        model = self.current_model()

        def loaded(res: Any) -> str:
            model.mark_profile_load()
            path = res.get("path") if isinstance(res, dict) else None
            return f"✓ loaded profile {name}" + (f" ({path})" if isinstance(path, str) else "")

        self.control("load_profile", {"name": name}, f"load profile {name}", on_ok=loaded)

    # -- save ----------------------------------------------------------------------------
    def action_save_profile(self) -> None:
        self.run_worker(self._save(self.current_link()), group="control")

    async def _save(self, link: EngineLink) -> None:
        cur = self.current_model().profile
        entries = await self._profiles(link, "save profile") or []
        origin = next((e["origin"] for e in entries if e["name"] == cur), None)
        if cur and origin == "user":
            self._send_save(cur)
            return
        if origin == "shipped":
            why = f"{cur!r} is a shipped profile: save your edits as a user profile."
        else:
            why = f"{cur or 'this profile'!r} is not among the engine's profiles: name it."
        self._save_as_modal(entries, f"{cur}-edited" if cur else "", why)

    def action_save_profile_as(self) -> None:
        self.run_worker(self._save_as(self.current_link()), group="control")

    async def _save_as(self, link: EngineLink) -> None:
        entries = await self._profiles(link, "list profiles") or []
        self._save_as_modal(entries, self.current_model().profile, "")

    def _save_as_modal(self, entries: list[dict[str, str]], current: str, why: str) -> None:
        users = {e["name"] for e in entries if e["origin"] != "shipped"}
        cur = self.current_model().profile

        def done(args: dict[str, Any] | None) -> None:
            if not args:
                return
            name = args["name"]
            if name not in users or name == cur:
                self._send_save(name)
                return

            def answer(yes: bool | None) -> None:
                if yes:
                    self._send_save(name)

            q = f"The engine has a user profile {name!r}. Replace it with the current setup?"
            self.push_screen(ConfirmModal("Overwrite profile?", q), answer)

        hint = (why + "\n" if why else "") + (
            "A profile name: the engine saves it in its user profile directory."
        )
        self.push_screen(EditModal("Save profile as", current, hint, save_as_parser(entries)), done)

    def _send_save(self, name: str) -> None:
        self.control("save_profile", {"name": name}, f"save profile {name}",
                     on_ok=saved_text(name))  # fmt: skip
