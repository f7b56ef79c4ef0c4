// Starts Swagger UI on /docs. It is a file rather than an inline <script> so that the
// page's Content-Security-Policy can forbid inline script; the schema's URL comes from
// the page (data-openapi-url), and nothing is fetched from outside this site.
(function startSwaggerUi() {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // The default would load a badge from validator.swagger.io: no outside requests.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
