// Museum kiosk page: photo + question -> answer; phrase -> box drawn; optional caption.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let photo = null;  // the File the visitor chose or took
  let info = null;

  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = !msg;
  }

  async function call(path, fields) {
    const form = new FormData();
    form.append("image", photo, photo.name || "photo");
    for (const [k, v] of Object.entries(fields)) form.append(k, v);
    const res = await fetch(path, { method: "POST", body: form });
    const body = await res.json().catch(() => ({ message: res.statusText }));
    if (!res.ok) throw new Error(body.message + (body.hint ? " — " + body.hint : ""));
    return body;
  }

  async function waitReady() {
    for (;;) {
      try {
        const r = await fetch("/readyz");
        if (r.ok) break;
        const b = await r.json();
        if (b.reason && b.reason !== "loading") { $("status").textContent = "The kiosk could not start: " + b.reason; return; }
      } catch (e) { /* server starting */ }
      await new Promise((ok) => setTimeout(ok, 500));
    }
    info = await (await fetch("/api/info")).json();
    $("status").textContent = "Ready. Take a photo of an exhibit and ask a question.";
    document.body.dataset.ready = "1";
    $("caption-card").hidden = !(info.tasks || []).includes("captioning");
  }

  $("photo").addEventListener("change", () => {
    const f = $("photo").files[0];
    if (!f) return;
    photo = f;
    const img = $("preview");
    img.src = URL.createObjectURL(f);
    img.hidden = false;
    $("boxed").hidden = true;
    $("answer-box").hidden = true;
    $("box-text").hidden = true;
    showError("");
  });

  function busy(button, on) { button.disabled = on; }

  $("ask-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!photo) { showError("Take or choose a photo first."); return; }
    busy($("ask"), true);
    showError("");
    try {
      const a = await call("/api/ask", { question: $("question").value, top_k: "3" });
      $("answer").textContent = a.answer;
      $("confidence").textContent = "(" + Math.round(a.confidence * 100) + "% sure)";
      const list = $("topk");
      list.replaceChildren(...a.top_k.slice(1).map((t) => {
        const li = document.createElement("li");
        li.textContent = t.answer + " · " + Math.round(t.confidence * 100) + "%";
        return li;
      }));
      $("answer-box").hidden = false;
    } catch (e) { showError(e.message); } finally { busy($("ask"), false); }
  });

  $("ground-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!photo) { showError("Take or choose a photo first."); return; }
    busy($("ground"), true);
    showError("");
    try {
      const g = await call("/api/ground", { phrase: $("phrase").value });
      const img = $("boxed");
      img.src = "data:image/png;base64," + g.png_base64;
      img.hidden = false;
      $("preview").hidden = true;
      const [x, y, w, h] = g.box_pixels;
      const t = $("box-text");
      t.textContent = "Marked at x=" + x + ", y=" + y + " (" + w + "×" + h + " px)";
      t.dataset.box = g.box.join(",");
      t.hidden = false;
    } catch (e) { showError(e.message); } finally { busy($("ground"), false); }
  });

  $("caption").addEventListener("click", async () => {
    if (!photo) { showError("Take or choose a photo first."); return; }
    busy($("caption"), true);
    showError("");
    try {
      const c = await call("/api/caption", { num_beams: "3" });
      $("caption-text").textContent = c.text;
      $("caption-text").hidden = false;
    } catch (e) { showError(e.message); } finally { busy($("caption"), false); }
  });

  waitReady();
})();
