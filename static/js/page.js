/* Small behaviours of every page, without inline handlers (the site's CSP forbids on* attributes):
 *   <select data-autosubmit>   submits its form when changed;
 *   <button data-print>        prints the page. */
(function () {
  "use strict";

  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit ? target.form.requestSubmit() : target.form.submit();
    }
  });
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target.closest("[data-print]") : null;
    if (target) {
      event.preventDefault();
      window.print();
    }
  });
})();
