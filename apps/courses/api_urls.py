from django.urls import path

from .api import (
    AssignmentDetailView,
    AssignmentsView,
    CellGradeView,
    CourseDetailView,
    CourseListView,
    CourseMemberDetailView,
    CourseMembersView,
    ExtensionsView,
    GradebookView,
    GradesReleaseView,
    GradingQueueView,
    InviteDetailView,
    InvitesView,
    JoinView,
    RegradeAnswerView,
    RegradeAskView,
    RegradeRequestsView,
    ReleaseView,
    RosterView,
    SubmissionDetailView,
    SubmissionFeedbackView,
    SubmissionRegradeView,
    SubmissionsView,
)

C = "courses/<slug:slug>"

urlpatterns = [
    path("courses/", CourseListView.as_view(), name="api-course-list"),
    path("courses/-/join/", JoinView.as_view(), name="api-course-join"),
    path(f"{C}/", CourseDetailView.as_view(), name="api-course-detail"),
    path(f"{C}/members/", CourseMembersView.as_view(), name="api-course-members"),
    path(f"{C}/members/<str:username>/", CourseMemberDetailView.as_view(), name="api-course-member-detail"),
    path(f"{C}/roster/", RosterView.as_view(), name="api-course-roster"),
    path(f"{C}/gradebook/", GradebookView.as_view(), name="api-course-gradebook"),
    path(f"{C}/invites/", InvitesView.as_view(), name="api-course-invites"),
    path(f"{C}/invites/<id:invite_id>/", InviteDetailView.as_view(), name="api-course-invite-detail"),
    path(f"{C}/assignments/", AssignmentsView.as_view(), name="api-course-assignments"),
    path(f"{C}/assignments/<slug:name>/", AssignmentDetailView.as_view(), name="api-course-assignment-detail"),
    path(f"{C}/assignments/<slug:name>/release/", ReleaseView.as_view(), name="api-course-assignment-release"),
    path(f"{C}/assignments/<slug:name>/extensions/", ExtensionsView.as_view(), name="api-course-extensions"),
    path(f"{C}/assignments/<slug:name>/submissions/", SubmissionsView.as_view(), name="api-course-submissions"),
    path(
        f"{C}/assignments/<slug:name>/submissions/<id:submission_id>/",
        SubmissionDetailView.as_view(),
        name="api-course-submission-detail",
    ),
    path(f"{C}/assignments/<slug:name>/grades/release/", GradesReleaseView.as_view(), name="api-course-grades-release"),
    path(f"{C}/assignments/<slug:name>/grading-queue/", GradingQueueView.as_view(), name="api-course-grading-queue"),
    path(f"{C}/assignments/<slug:name>/regrade-requests/", RegradeRequestsView.as_view(), name="api-course-regrades"),
    path(
        f"{C}/assignments/<slug:name>/regrade-requests/<id:request_id>/answer/",
        RegradeAnswerView.as_view(),
        name="api-course-regrade-answer",
    ),
    path(
        f"{C}/assignments/<slug:name>/submissions/<id:submission_id>/cells/<str:grade_id>/",
        CellGradeView.as_view(),
        name="api-course-cell-grade",
    ),
    path(
        f"{C}/assignments/<slug:name>/submissions/<id:submission_id>/cells/<str:grade_id>/regrade/",
        RegradeAskView.as_view(),
        name="api-course-regrade-ask",
    ),
    path(
        f"{C}/assignments/<slug:name>/submissions/<id:submission_id>/regrade/",
        SubmissionRegradeView.as_view(),
        name="api-course-submission-regrade",
    ),
    path(
        f"{C}/assignments/<slug:name>/submissions/<id:submission_id>/feedback/",
        SubmissionFeedbackView.as_view(),
        name="api-course-submission-feedback",
    ),
]
