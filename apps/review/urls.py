from django.urls import path

from . import views

app_name = "review"

P = "pub/<id:publication_id>"
V = f"{P}/v<id:number>"

urlpatterns = [
    path(f"{P}", views.publication_latest, name="latest"),
    path(f"{P}/diff", views.diff, name="diff"),
    path(f"{P}/invite", views.invite, name="invite"),
    path(f"{V}", views.landing, name="landing"),
    path(f"{V}/render", views.rendered, name="render"),
    path(f"{V}/notebook.ipynb", views.notebook_download, name="notebook"),
    path(f"{V}/crate.zip", views.crate, name="crate"),
    path(f"{V}/report", views.report, name="report"),
    path(f"{V}/datacite.json", views.datacite_json, name="datacite"),
    path(f"{V}/cite.bib", views.cite_bibtex, name="bibtex"),
    path(f"{V}/CITATION.cff", views.cite_cff, name="cff"),
    path(f"{V}/cite.txt", views.cite_apa, name="apa"),
    path(f"{V}/decision", views.decide, name="decide"),
    path("p/<slug:slug>/publish/<path:path>", views.publish, name="publish"),
    path("reviews/", views.my_reviews, name="my-reviews"),
    path("reviews/<id:review_id>/", views.review_desk, name="review"),
    path("reviews/invitation/<str:token>/", views.invitation, name="invitation"),
    path("notifications/", views.notifications, name="notifications"),
]
