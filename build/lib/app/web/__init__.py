"""The dashboard's shell, shared by every noun's pages.py: templates and the HTML route
(`rendering`), sign-in sessions and CSRF (`auth`), the sign-in pages (`login`) and the chart
toolkit (`figures`). It knows no product noun; the nouns build their pages on it."""
