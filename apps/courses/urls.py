from django.urls import path

from . import grading_views, views

app_name = "courses"

urlpatterns = [
    path("courses/", views.course_list, name="list"),
    path("courses/join/", views.join, name="join"),
    path("courses/join/<str:token>/", views.join_page, name="join-page"),
    path("courses/<slug:slug>/", views.course_detail, name="detail"),
    path("courses/<slug:slug>/a/<slug:name>/", views.assignment_detail, name="assignment"),
    path("courses/<slug:slug>/gradebook/", grading_views.gradebook_page, name="gradebook"),
    path("courses/<slug:slug>/a/<slug:name>/submit/", grading_views.submit_page, name="submit"),
    path("courses/<slug:slug>/a/<slug:name>/release/", grading_views.release_page, name="release"),
    path("courses/<slug:slug>/a/<slug:name>/queue/", grading_views.grading_queue_page, name="grading-queue"),
    path("courses/<slug:slug>/a/<slug:name>/s/<id:submission_id>/", grading_views.submission_detail, name="submission"),
    path(
        "courses/<slug:slug>/a/<slug:name>/s/<id:submission_id>/grade/",
        grading_views.grade_cell_page,
        name="cell-grade",
    ),
    path(
        "courses/<slug:slug>/a/<slug:name>/s/<id:submission_id>/regrade/",
        grading_views.regrade_page,
        name="submission-regrade",
    ),
    path(
        "courses/<slug:slug>/a/<slug:name>/s/<id:submission_id>/feedback/<id:index>/",
        grading_views.submission_feedback,
        name="submission-feedback",
    ),
]
