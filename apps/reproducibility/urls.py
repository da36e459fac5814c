from django.urls import path

from . import views

app_name = "reproducibility"

urlpatterns = [
    path("runs/<id:run_id>/environment/", views.run_environment, name="environment"),
    path("runs/<id:run_id>/environment/diff/", views.run_environment_diff, name="environment-diff"),
    path("runs/<id:run_id>/reproduce/", views.reproduce, name="reproduce"),
    path("runs/<id:run_id>/report/", views.run_report, name="report"),
    path("runs/<id:run_id>/lineage.svg", views.run_lineage_svg, name="lineage-svg"),
    path("reproductions/<id:reproduction_id>/", views.reproduction_detail, name="reproduction"),
]
