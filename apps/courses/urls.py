from django.urls import path

from . import views

app_name = "courses"

urlpatterns = [
    path("courses/", views.course_list, name="list"),
    path("courses/join/", views.join, name="join"),
    path("courses/join/<str:token>/", views.join_page, name="join-page"),
    path("courses/<slug:slug>/", views.course_detail, name="detail"),
    path("courses/<slug:slug>/a/<slug:name>/", views.assignment_detail, name="assignment"),
]
