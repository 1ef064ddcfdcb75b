"""Look of the chat page: a theme with system fonts (nothing fetched from outside) and phone-width CSS."""

from __future__ import annotations

import gradio as gr

SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")

CSS = """
.gradio-container { width: 100% !important; max-width: 1200px !important; margin: 0 auto !important; }
#persona-actions { gap: 6px; }
#persona-actions button { flex: 1 1 0; }
#new-error { color: #b91c1c; }
#chat .reply-version {
  display: block; margin-top: 0.35em; font-size: 0.75em; opacity: 0.6; letter-spacing: 0.02em;
}
#persona-card-row { flex-wrap: nowrap !important; align-items: flex-start; gap: 12px; }
#persona-picker input { text-overflow: ellipsis; min-width: 0; }
#persona-picture { flex: 0 0 112px !important; max-width: 112px; }
#persona-picture img { border-radius: 12px; object-fit: cover; }
#persona-picture .icon-button-wrapper { display: none !important; }
#persona-card { min-width: 0 !important; overflow-wrap: anywhere; }
#persona-card h3 { margin: 0 0 0.2em 0; }
#persona-card p { margin: 0; }
#chat-error { color: #b91c1c; }
#chat-actions { gap: 8px; }
#chat-actions button { flex: 1 1 0; }
#composer { flex-wrap: nowrap !important; align-items: stretch; }
@media (max-width: 640px) {
  /* One column: persona, then the chat, then version and sampling below it. */
  #layout { flex-direction: column !important; flex-wrap: nowrap !important; gap: 10px !important; }
  #persona-panel { display: contents !important; }
  #chat-panel { order: 2; }
  #persona-panel > .form:has(#version-picker), #sampling, #persona-actions, #remove-confirm { order: 3; }
  #chat { height: 55vh !important; min-height: 300px; }
  #persona-picture {
    flex: 0 0 72px !important; width: 72px !important; max-width: 72px;
    height: 72px !important; min-width: 72px !important;
  }
  #persona-picture img { width: 72px !important; height: 72px !important; }
  #persona-description {
    display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
  }
  #composer { gap: 6px; }
  #composer button { min-width: 64px !important; }
}
"""

# Gradio scopes the rules of ``CSS`` to the page's content; the page margins sit outside it.
HEAD = """<meta name="theme-color" content="#f59e0b">
<style>@media (max-width: 640px) { .gradio-container .main { padding: 8px 10px !important; } }</style>
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="amber", font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))
