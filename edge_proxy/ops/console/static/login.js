"use strict";
(function () {
  const form = document.getElementById("login");
  const params = new URLSearchParams(location.search);
  let next = params.get("next") || (location.pathname === "/login" ? "/" : location.pathname);
  if (!next.startsWith("/") || next.startsWith("//")) next = "/";
  document.getElementById("next").value = next;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    const response = await fetch("/login", {
      method: "POST", body, credentials: "same-origin", headers: { Accept: "application/json" },
    });
    if (response.ok) {
      const answer = await response.json();
      location.href = answer.next || "/";
    } else {
      document.getElementById("login-error").hidden = false;
      document.getElementById("token").select();
    }
  });
})();
