// The page's only script: send the form to /v1/predict, show the answer, fetch the PDF.
// No framework and nothing from the internet; the service serves this file itself.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("form"), fileInput = $("file"), drop = $("drop"), status = $("status");
let chosen = null;          // the File to send
let previewUrl = null;      // object URL of a browser-displayable file
let images = { overlay: null, plain: null, unavailable: null };

function say(text, isError) {
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function months(m) {
  return `${m.toFixed(1)} months (${(m / 12).toFixed(1)} years)`;
}

// Sex from a DICOM file's PatientSex tag (0010,0040), to pre-fill the select.
function dicomSex(buf) {
  const b = new Uint8Array(buf);
  if (b.length < 132 || String.fromCharCode(b[128], b[129], b[130], b[131]) !== "DICM") return null;
  for (let i = 132; i + 10 < b.length; i++) {
    if (b[i] === 0x10 && b[i + 1] === 0x00 && b[i + 2] === 0x40 && b[i + 3] === 0x00) {
      let len, start;
      if (b[i + 4] === 0x43 && b[i + 5] === 0x53) { len = b[i + 6] | (b[i + 7] << 8); start = i + 8; }  // explicit VR "CS"
      else { len = b[i + 4] | (b[i + 5] << 8); start = i + 8; }                                   // implicit VR
      const v = String.fromCharCode(...b.slice(start, start + Math.min(len, 16))).trim().toUpperCase();
      return v === "M" || v === "F" ? v : null;
    }
  }
  return null;
}

function choose(file) {
  chosen = file;
  $("result").hidden = true;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  if (!file) return;
  if (/^image\/(png|jpeg|bmp|gif|webp)$/.test(file.type)) {
    previewUrl = URL.createObjectURL(file);
    $("picture").src = previewUrl;
    $("picture-caption").textContent = "";
  }
  file.slice(0, 65536).arrayBuffer().then((buf) => {
    const sex = dicomSex(buf);
    if (sex) { $("sex").value = sex; say(`Sex ${sex} from the DICOM file.`); }
  });
  say(`${file.name} chosen (${Math.round(file.size / 1024)} KiB). Press Assess.`);
}

fileInput.addEventListener("change", () => choose(fileInput.files[0] || null));
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => {
  const f = e.dataTransfer.files[0];
  if (f) { choose(f); }
});

// Whether the chosen file is DICOM ('DICM' at byte 128): only DICOM can carry the sex.
async function isDicom(file) {
  const b = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return b.length === 4 && String.fromCharCode(...b) === "DICM";
}

// Ask for the sex before uploading a file that cannot say it, instead of a 422 afterwards.
async function sexMissing() {
  if ($("sex").value || await isDicom(chosen)) return false;
  say("Choose the sex: this file is not DICOM, so it has no sex tag to read it from.", true);
  $("sex").focus();
  return true;
}

function formData(withHeatmap, withRadiograph) {
  const fd = new FormData();
  fd.append("file", chosen, chosen.name);
  for (const name of ["sex", "birth_date", "study_date", "age_months"]) {
    const v = $(name).value.trim();
    if (v) fd.append(name, v);
  }
  if ($("force").checked) fd.append("force", "true");
  if (withHeatmap) fd.append("heatmap", "true");
  if (withRadiograph) fd.append("radiograph", "true");
  return fd;
}

async function errorText(resp) {
  try { return (await resp.json()).detail || resp.statusText; } catch (e) { return resp.statusText; }
}

// The heat map is off until asked for: it doubles the time, and on real radiographs its
// hottest area may lie on background, which a reader could take for what the model read.
async function showPicture() {
  if ($("show-heatmap").checked && !images.overlay && !images.unavailable) {
    say("Computing the heat map…");
    try {
      const resp = await fetch("/v1/predict", { method: "POST", body: formData(true, true) });
      if (!resp.ok) { say(`No heat map (${resp.status}): ${await errorText(resp)}`, true); return; }
      takePictures(await resp.json());
      say("Done.");
    } catch (err) {
      say(`The service did not answer: ${err}`, true);
      return;
    }
  }
  const on = $("show-heatmap").checked && images.overlay;
  const src = on ? images.overlay : (images.plain || previewUrl);
  if (src) $("picture").src = src;
  $("picture").alt = on ? "The radiograph with the Grad-CAM heat map over it" : "The radiograph as assessed";
}

function show(r) {
  // At the top of the Greulich–Pyle range the service says "at or near skeletal maturity ..."
  // instead of an age the model cannot back (the same words as the report and the CSV).
  $("bone-age").textContent = r.maturity || months(r.bone_age_months);
  $("bone-age").dataset.months = r.bone_age_months.toFixed(1);
  $("interval").textContent = r.interval
    ? `${Math.round(r.interval.level * 100)} %: ${r.interval.low_months.toFixed(1)} – ${r.interval.high_months.toFixed(1)} months`
    : "no calibrated interval";
  const c = r.clinical;
  $("chrono").textContent = c ? `${months(c.chronological_age_months)}, ${c.age_source}` : "not given";
  $("difference").textContent = c ? `${c.difference_months >= 0 ? "+" : ""}${c.difference_months.toFixed(1)} months` : "–";
  $("zscore").textContent = c ? (c.z_score === null ? (c.no_z_score_reason || "–") : `${c.z_score.toFixed(2)} (${c.reference})`) : "–";
  $("impression").textContent = c ? c.statement : "give dates or an age for an impression";
  $("sex-out").textContent = `${r.sex === "M" ? "male" : "female"} (${r.sex_source})`;
  const q = r.quality;
  $("quality").textContent = q ? q.verdict + (q.reason ? `: ${q.reason}` : "") +
    (q.corrections && q.corrections.length ? ` (corrected: ${q.corrections.join(", ")})` : "") : "not checked";
  $("quality").className = q && q.verdict === "forced" ? "forced" : "";
  $("model").textContent = `${r.model_name} (${r.model_hash})`;
  images = { overlay: null, plain: null, unavailable: null };
  takePictures(r);
  showPicture();
  $("result").hidden = false;
}

function takePictures(r) {
  images.overlay = r.heatmap_png_base64 ? `data:image/png;base64,${r.heatmap_png_base64}` : null;
  if (r.radiograph_png_base64) images.plain = `data:image/png;base64,${r.radiograph_png_base64}`;
  images.unavailable = r.heatmap_unavailable || null;
  $("picture-caption").textContent = images.unavailable ? `No heat map: ${images.unavailable}.` : "";
}

$("show-heatmap").addEventListener("change", showPicture);

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!chosen) { say("Choose a radiograph first.", true); fileInput.focus(); return; }
  if (await sexMissing()) return;
  $("submit").disabled = true;
  say("Assessing…");
  try {
    const resp = await fetch("/v1/predict", { method: "POST", body: formData($("show-heatmap").checked, true) });
    if (!resp.ok) { say(`Not assessed (${resp.status}): ${await errorText(resp)}`, true); $("result").hidden = true; return; }
    show(await resp.json());
    say("Done.");
    $("result-heading").focus();
  } catch (err) {
    say(`The service did not answer: ${err}`, true);
  } finally {
    $("submit").disabled = false;
  }
});

$("result-heading").tabIndex = -1;

$("report").addEventListener("click", async () => {
  if (!chosen || await sexMissing()) return;
  $("report").disabled = true;
  say("Writing the report…");
  try {
    const resp = await fetch("/v1/report", { method: "POST", body: formData(false, false) });
    if (!resp.ok) { say(`No report (${resp.status}): ${await errorText(resp)}`, true); return; }
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a");
    a.href = url; a.download = "bone-age-report.pdf";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say("Report downloaded.");
  } catch (err) {
    say(`The service did not answer: ${err}`, true);
  } finally {
    $("report").disabled = false;
  }
});
