// The labelling view of the imgrade page (imgrade serve --label TO_LABEL.csv): one photo at a
// time, large, with the model's grade as a hint; one button (or key 1-9) per grade adds the label
// to LABELS.csv on the server and brings the next photo. Photos are fetched by their number in
// TO_LABEL.csv, never by a path. Text from the server is only ever set with textContent.
"use strict";

(() => {
  const { api, showBanner, modelReady } = window.imgrade;
  const $ = (id) => document.getElementById(id);
  const view = {
    section: $("label-view"),
    progress: $("label-progress"),
    barFill: $("label-bar-fill"),
    body: $("label-body"),
    img: $("label-img"),
    photoError: $("label-photo-error"),
    path: $("label-path"),
    hint: $("label-hint-text"),
    suggested: $("label-suggested"),
    buttons: $("label-buttons"),
    undo: $("label-undo"),
    skip: $("label-skip"),
    done: $("label-done"),
  };

  let grades = [];
  let state = null; // the last answer of the /v1/label routes
  let busy = false; // a label, an undo or a skip is on its way: clicks wait for it
  let shown = 0; // counts the photos shown, so a late photo or hint for an earlier one is dropped
  let photoUrl = null;

  const JSON_POST = (body) => ({
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setBusy(value) {
    busy = value;
    view.section.dataset.state = value ? "loading" : state && state.next ? "ready" : "done";
    for (const button of view.buttons.querySelectorAll("button")) button.disabled = value || !(state && state.next);
    view.undo.disabled = value || !(state && state.last);
    view.skip.disabled = value || !(state && state.next);
  }

  function buildButtons() {
    view.buttons.replaceChildren(
      ...grades.map((grade, k) => {
        const button = el("button", "button label-grade");
        button.type = "button";
        button.dataset.grade = grade;
        button.setAttribute("data-testid", "label-button");
        if (k < 9) button.append(el("kbd", "label-key", k + 1));
        button.append(el("span", "label-grade-name", grade));
        button.title = k < 9 ? `Label as ${grade} (key ${k + 1})` : `Label as ${grade}`;
        button.addEventListener("click", () => label(grade));
        return button;
      }),
    );
  }

  /** Wait for one of the /v1/label routes, then show its answer; an error goes to the banner. */
  async function update(request) {
    if (busy) return;
    setBusy(true);
    try {
      state = await request();
    } catch (error) {
      showBanner(`Labelling: ${error.message}`);
    }
    render();
    setBusy(false);
  }

  function render() {
    if (!state) return;
    const { labelled, total } = state;
    view.progress.textContent = `${labelled} of ${total} labelled`;
    view.barFill.style.width = `${total ? (100 * labelled) / total : 0}%`;
    if (!state.next) {
      view.body.hidden = true;
      view.done.hidden = false;
      view.done.textContent =
        `Every photo is labelled. Train on them: imgrade train --data ${state.labels_file} (in the folder of ${state.labels_file}).`;
      return;
    }
    view.body.hidden = false;
    view.done.hidden = true;
    if (String(state.next.index) !== view.section.dataset.index) showPhoto(state.next);
  }

  function showPhoto(photo) {
    shown += 1;
    const mine = shown;
    view.section.dataset.index = String(photo.index);
    view.path.textContent = photo.path;
    view.path.title = photo.path;
    view.suggested.hidden = !photo.suggested;
    view.suggested.textContent = photo.suggested ? `Suggested: ${photo.suggested}` : "";
    view.hint.textContent = "…";
    view.photoError.hidden = true;
    view.img.alt = `Photo ${photo.path}`;
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = null;
    view.img.removeAttribute("src");
    api(`v1/label/photos/${photo.index}`, {}, "blob").then(
      (blob) => {
        if (mine !== shown) return;
        photoUrl = URL.createObjectURL(blob);
        view.img.src = photoUrl;
      },
      (error) => {
        if (mine !== shown) return;
        view.photoError.textContent = `Cannot show this photo: ${error.message}`;
        view.photoError.hidden = false;
      },
    );
    api(`v1/label/photos/${photo.index}/grade`).then(
      (record) => {
        if (mine !== shown) return;
        const set = Array.isArray(record.grade_set) ? ` · grade set ${record.grade_set.join(", ") || "empty"}` : "";
        view.hint.textContent = `${record.grade}${set} · score ${Number(record.score).toFixed(2)}`;
      },
      (error) => {
        if (mine === shown) view.hint.textContent = `no grade (${error.message})`;
      },
    );
  }

  function label(grade) {
    if (busy || !state || !state.next) return;
    const index = state.next.index;
    update(() => api("v1/label", JSON_POST({ index, grade })));
  }

  view.undo.addEventListener("click", () => update(() => api("v1/label/undo", JSON_POST({}))));
  view.skip.addEventListener("click", () => {
    if (state && state.next) update(() => api(`v1/label?start=${state.next.index + 1}`));
  });
  view.img.addEventListener("load", () => {
    // Tiny photos (CUCUMBER-9 is 32x32) look right as crisp pixels, not a blur.
    view.img.classList.toggle("pixelated", view.img.naturalWidth > 0 && view.img.naturalWidth < 128);
  });

  document.addEventListener("keydown", (event) => {
    if (view.section.hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, textarea, select")) return;
    const key = event.key.toLowerCase();
    if (/^[1-9]$/.test(key) && Number(key) <= grades.length) {
      event.preventDefault();
      label(grades[Number(key) - 1]);
    } else if (key === "u" && !view.undo.disabled) {
      event.preventDefault();
      view.undo.click();
    } else if (key === "s" && !view.skip.disabled) {
      event.preventDefault();
      view.skip.click();
    }
  });

  modelReady.then((model) => {
    if (!model || !model.label || !Array.isArray(model.grades)) return;
    grades = model.grades;
    view.section.hidden = false;
    buildButtons();
    update(() => api("v1/label"));
  });
})();
