"""Small pieces of browser-side behaviour (``st.components.v2``, inline JS mounted in the page's own DOM):

- ``page_support``: writes or clears the signed session cookie (so a reload keeps the login), keeps
  a per-browser device id cookie (login throttling per device and name), and watches the server's
  health endpoint: while it does not answer, a fixed banner says the server is unreachable and that
  the page will show whether the last answer was saved once it is back;
- ``hotkeys``: one-key shortcuts on the rating page (play clips, choose, rate, submit).
"""

from __future__ import annotations

import re
from typing import Any

import streamlit.components.v2 as components_v2


def compact_js(source: str) -> str:
    """The component's script without comments and indentation: components v2 send their script
    with every rerun that mounts them (the rate page's trackers: each listen report and submit)."""
    out = []
    for line in source.splitlines():
        code = re.sub(r"\s{2,}// .*$", "", line).strip()  # trailing comments are set off by two spaces
        if code and not code.startswith("//"):
            out.append(code)
    return "\n".join(out) + "\n"


SESSION_COOKIE = "earmark_session"
DEVICE_COOKIE = "earmark_device"
OFFLINE_TEXT = (
    "The server is unreachable. Your last answer may not have been saved; keep this page open: "
    "once the server is back it reloads and shows whether it was."
)

_SUPPORT_JS = r"""
export default function (component) {
  const { data } = component;
  const secure = window.location.protocol === "https:" ? "; Secure" : "";
  if (data.set_session) {
    document.cookie = `__SESSION__=${data.set_session}; Path=/; Max-Age=${data.max_age}; SameSite=Strict${secure}`;
  }
  if (data.clear_session) {
    document.cookie = `__SESSION__=; Path=/; Max-Age=0; SameSite=Strict${secure}`;
  }
  if (!document.cookie.split("; ").some((c) => c.startsWith("__DEVICE__="))) {
    const id = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));
    document.cookie = `__DEVICE__=${id}; Path=/; Max-Age=31536000; SameSite=Strict${secure}`;
  }
  const w = window;
  if (w.__earmarkHealth) return;
  w.__earmarkHealth = true;
  let down = false;
  const banner = () => {
    let b = document.getElementById("earmark-offline");
    if (!b) {
      b = document.createElement("div");
      b.id = "earmark-offline";
      b.setAttribute("role", "alert");
      b.style.cssText = "position:fixed;top:0;left:0;right:0;z-index:999999;padding:12px 16px;" +
        "background:#b3261e;color:#fff;font:600 15px/1.4 sans-serif;text-align:center";
      document.body.appendChild(b);
    }
    return b;
  };
  const check = async () => {
    let ok = false;
    try {
      const r = await fetch(window.location.origin + "/_stcore/health", { cache: "no-store" });
      ok = r.ok;
    } catch (e) { ok = false; }
    if (!ok && !down) {
      down = true;
      banner().textContent = data.offline_text;
    } else if (ok && down) {
      down = false;
      // A restarted server has forgotten this tab's session: reload, the cookie logs back in and
      // the page says whether the last answer was saved.
      banner().textContent = "Reconnected. Reloading…";
      setTimeout(() => window.location.reload(), 300);
    }
  };
  setInterval(check, data.interval_ms);
}
""".replace("__SESSION__", SESSION_COOKIE).replace("__DEVICE__", DEVICE_COOKIE)

_support = components_v2.component("earmark_page_support", js=compact_js(_SUPPORT_JS))


def page_support(*, set_session: str | None = None, clear_session: bool = False, max_age: int = 0) -> None:
    _support(
        key="earmark-page-support",
        data={
            "set_session": set_session,
            "clear_session": clear_session,
            "max_age": max_age,
            "offline_text": OFFLINE_TEXT,
            "interval_ms": 2000,
        },
        height=0,
    )


_HOTKEYS_JS = r"""
export default function (component) {
  const { data } = component;
  const w = window;
  w.__earmarkHotkeys = data;  // the latest item's keys; one listener for the whole page
  if (w.__earmarkHotkeysBound) return;
  w.__earmarkHotkeysBound = true;
  // Waveforms are pictures: keep their chart menus and canvases out of the Tab order (the players
  // and the questions stay in it; the keys above play the clips).
  setInterval(() => {
    for (const el of document.querySelectorAll(
      "[data-testid='stVegaLiteChart'] [tabindex], [data-testid='stVegaLiteChart'] a, " +
      "[data-testid='stVegaLiteChart'] button, [data-testid='stVegaLiteChart'] summary, " +
      "[data-testid='stElementToolbar'] button")) {
      if (el.getAttribute("tabindex") !== "-1") el.setAttribute("tabindex", "-1");
    }
  }, 500);
  const clickOption = (boxClass, text) => {
    const box = document.querySelector(`[class*="${boxClass}"]`);
    if (!box) return false;
    for (const label of box.querySelectorAll("label")) {
      if (label.innerText.trim() === text) { label.click(); return true; }
    }
    return false;
  };
  const answered = (boxClass) => {
    const box = document.querySelector(`[class*="${boxClass}"]`);
    return box && (box.querySelector("input:checked") || box.dataset.earmarkAnswered === "1");
  };
  document.addEventListener("keydown", (ev) => {
    const d = w.__earmarkHotkeys;
    if (!d || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio") || t.isContentEditable)) return;
    const k = ev.key.toLowerCase();
    if (d.play[k]) {
      const audio = document.querySelector(`.st-key-${d.play[k]} audio`);
      if (audio) { audio.paused ? audio.play() : audio.pause(); ev.preventDefault(); }
      return;
    }
    if (d.choice[k] && clickOption(d.choice_box, d.choice[k])) { ev.preventDefault(); return; }
    if (d.strength[k] && clickOption(d.strength_box, d.strength[k])) { ev.preventDefault(); return; }
    if (/^[1-5]$/.test(k)) {
      for (const box of d.dimension_boxes) {
        if (!answered(box)) {
          // mark it at once: the next key goes to the next question even before React re-renders
          if (clickOption(box, k)) document.querySelector(`[class*="${box}"]`).dataset.earmarkAnswered = "1";
          ev.preventDefault();
          return;
        }
      }
    }
  });
}
"""

_hotkeys = components_v2.component("earmark_hotkeys", js=compact_js(_HOTKEYS_JS))


def hotkeys(spec: dict[str, Any], task_id: int) -> None:
    _hotkeys(key=f"hotkeys-{task_id}", data=spec, height=0)
